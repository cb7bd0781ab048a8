/**
 * Fixture components for unit tests: load one from test/fixtures, replace
 * some of its handlers with test-made ones (closures over deferreds), and run
 * it in a container that logs nowhere.
 */
import { fileURLToPath } from "node:url";
import type { Handler, Hooks, Logger } from "../../src/component/context.ts";
import { loadComponent, type Component } from "../../src/component/loader.ts";
import type { ComponentManifest } from "../../src/component/manifest.ts";
import { Container } from "../../src/container/container.ts";
import { silentLogger } from "./recording-logger.ts";

/** Absolute path of test/fixtures/<rel>. */
export function fixturePath(rel: string): string {
  return fileURLToPath(new URL(`../fixtures/${rel}`, import.meta.url));
}

/** Absolute path of the example component examples/components/<name>. */
export function examplePath(name: string): string {
  return fileURLToPath(new URL(`../../examples/components/${name}`, import.meta.url));
}

/** Loads the component in test/fixtures/<rel>. */
export function loadFixture(rel: string): Promise<Component> {
  return loadComponent(fixturePath(rel));
}

/** A copy of `component` with some handlers, hooks or limits replaced. */
export function withHandlers(
  component: Component,
  handlers: Record<string, Handler>,
  more: { hooks?: Hooks; limits?: Partial<ComponentManifest["limits"]> } = {},
): Component {
  for (const name of Object.keys(handlers)) {
    if (!component.handlers.has(name)) throw new Error(`fixture ${component.name} has no method ${name}`);
  }
  return {
    ...component,
    handlers: new Map([...component.handlers, ...Object.entries(handlers)]),
    hooks: more.hooks ?? component.hooks,
    manifest: { ...component.manifest, limits: { ...component.manifest.limits, ...more.limits } },
  };
}

/** A container with `components` added (one node each), logging nowhere unless told. */
export async function startContainer(components: Component[], logger: (source: string) => Logger = () => silentLogger): Promise<Container> {
  const container = new Container({ id: "test", logger });
  for (const component of components) await container.addComponent(component);
  return container;
}

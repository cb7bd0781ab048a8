/**
 * The built-in zombie plugin ("default-zombie"): a child that stopped
 * answering pings is killed and (unless `respawn: false`) replaced.
 */
import type { ChildView, PluginModule, ZombieActions, ZombieStrategy } from "../strategy.ts";

function parseOptions(options: Record<string, unknown>): { respawn: boolean } {
  for (const key of Object.keys(options)) {
    if (key !== "respawn") throw new Error(`default-zombie: unknown option "${key}" (known: respawn)`);
  }
  const respawn = options.respawn;
  if (respawn !== undefined && typeof respawn !== "boolean") {
    throw new Error(`default-zombie: option "respawn" must be true or false, got ${typeof respawn === "string" ? JSON.stringify(respawn) : String(respawn)}`);
  }
  return { respawn: respawn ?? true };
}

export class DefaultZombie implements ZombieStrategy {
  readonly name = "default-zombie";
  readonly respawn: boolean;

  constructor(respawn = true) {
    this.respawn = respawn;
  }

  onZombie(child: ChildView, actions: ZombieActions): void {
    const silentMs = Math.max(0, Date.now() - (child.lastPongAt || child.startedAt));
    const next = this.respawn ? "killing it and starting a replacement" : "killing it (respawn is off)";
    actions.log.warn(`${child.component} pid ${child.pid} is a zombie: no pong for ${silentMs} ms (missed ${child.missedPongs}); ${next}`, {
      component: child.component,
      pid: child.pid,
      missedPongs: child.missedPongs,
      restarts: child.restarts,
    });
    actions.kill();
    if (this.respawn) actions.respawn();
  }
}

const plugin: PluginModule<"zombie"> = {
  kind: "zombie",
  name: "default-zombie",
  create(options) {
    return new DefaultZombie(parseOptions(options).respawn);
  },
};

export default plugin;

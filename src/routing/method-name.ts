/**
 * Turns what a person or a handler writes ("demo.Greeter/Hello",
 * "demo.Greeter.Hello", "Greeter.Hello", "Greeter/Hello") into a full method
 * name, or a NOT_FOUND that says what was asked and lists close matches.
 */
import { NodeBinError } from "../wire/errors.ts";
import { editDistance } from "../wire/message.ts";

/** Resolves `asked` among `known` full names ("pkg.Service/Method"). Throws NOT_FOUND. */
export function resolveMethodName(asked: string, known: Iterable<string>): string {
  const names = [...known];
  const normalized = normalize(asked);
  if (normalized && names.includes(normalized)) return normalized;
  if (normalized) {
    // "Service/Method" without its package: accept it when only one package has it.
    const matches = names.filter((n) => n.endsWith(`.${normalized}`));
    if (matches.length === 1) return matches[0]!;
    if (matches.length > 1) {
      throw new NodeBinError("NOT_FOUND", `method ${asked} is ambiguous: ${matches.join(", ")}; give the full name`, {
        details: { method: asked, suggestions: matches.join(",") },
      });
    }
  }
  throw notFound(asked, normalized ?? asked, names);
}

function normalize(asked: string): string | undefined {
  const name = asked.trim().replace(/^\./, "");
  if (name.includes("/")) return /^[\w.]+\/\w+$/.test(name) ? name : undefined;
  const dot = name.lastIndexOf(".");
  return dot > 0 ? `${name.slice(0, dot)}/${name.slice(dot + 1)}` : undefined;
}

function notFound(asked: string, normalized: string, names: string[]): NodeBinError {
  const [service, method] = normalized.split("/") as [string, string | undefined];
  const services = [...new Set(names.map((n) => n.slice(0, n.indexOf("/"))))];
  // A service named without a method: list its methods.
  const bareService = asked.trim().replace(/^\.|\/$/g, "");
  const named = services.find((s) => s === bareService || s.endsWith(`.${bareService}`));
  if (named && bareService) {
    const methods = names.filter((n) => n.startsWith(`${named}/`));
    return new NodeBinError("NOT_FOUND", `${named} is a service; name one of its methods: ${methods.map((m) => m.slice(named.length + 1)).join(", ")}`, {
      details: { method: asked, suggestions: methods.join(",") },
    });
  }
  const serviceMatch = services.find((s) => s === service || s.endsWith(`.${service}`));
  const suggestions = nearest(normalized, names, 3);
  let message: string;
  if (names.length === 0) message = `no method ${asked}: no node serves any method yet`;
  else if (serviceMatch && method) message = `service ${serviceMatch} has no method ${method}`;
  else message = `no service serves ${asked}`;
  if (suggestions.length) message += ` (did you mean ${suggestions.join(", ")}?)`;
  else if (names.length) message += `; known services: ${services.slice(0, 10).join(", ")}${services.length > 10 ? ", ..." : ""}`;
  return new NodeBinError("NOT_FOUND", message, { details: { method: asked, suggestions: suggestions.join(",") } });
}

/**
 * Up to `count` names close to `asked`, nearest first: compared in full, as
 * "Service/Method" without the package, and (for a bare "Method") by method
 * name alone. Close means within a quarter of the length: typos, not guesses.
 */
function nearest(asked: string, names: string[], count: number): string[] {
  const a = asked.toLowerCase();
  const aShort = withoutPackage(a);
  const bare = !a.includes("/");
  const limit = Math.max(1, Math.floor(aShort.length / 4));
  return names
    .map((n) => {
      const lower = n.toLowerCase();
      const d = Math.min(editDistance(a, lower), editDistance(aShort, withoutPackage(lower)), bare ? editDistance(a, lower.slice(lower.indexOf("/") + 1)) : Infinity);
      return { n, d };
    })
    .filter(({ d }) => d <= limit)
    .sort((x, y) => x.d - y.d)
    .slice(0, count)
    .map(({ n }) => n);
}

/** "pkg.Service/Method" -> "Service/Method". */
function withoutPackage(name: string): string {
  const slash = name.indexOf("/");
  return name.slice(name.lastIndexOf(".", slash < 0 ? name.length : slash) + 1);
}

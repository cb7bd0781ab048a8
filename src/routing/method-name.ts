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

/** Up to `count` names close to `asked`, nearest first (compared with and without the package). */
function nearest(asked: string, names: string[], count: number): string[] {
  const short = (n: string) => n.slice(n.lastIndexOf(".", n.indexOf("/")) + 1);
  const a = asked.toLowerCase();
  return names
    .map((n) => ({ n, d: Math.min(editDistance(a, n.toLowerCase()), editDistance(short(a), short(n).toLowerCase())) }))
    .filter(({ n, d }) => d <= Math.max(2, Math.floor(short(n).length / 3)))
    .sort((x, y) => x.d - y.d)
    .slice(0, count)
    .map(({ n }) => n);
}

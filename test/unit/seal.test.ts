// Sealed payloads (src/security/seal.ts): what a state transfer carries between processes. Every
// way a payload can be wrong (changed in any one byte, cut short, sealed for another context or
// under a key the ring does not hold, never sealed) is UNAUTHENTICATED and yields nothing; a
// payload sealed before a rotation opens while its key is still in the ring.
import { serialize } from "node:v8";
import t, { type Test } from "tap";
import { newKeyLine, parseKeyring, type Keyring } from "../../src/security/keys.ts";
import { isSealed, open, seal } from "../../src/security/seal.ts";
import { NodeBinError } from "../../src/wire/errors.ts";

const ring = (...lines: string[]): Keyring => parseKeyring(lines.join("\n"), "test.key");
const [k1, k2, k3] = [newKeyLine(), newKeyLine(), newKeyLine()];
const CONTEXT = "state counter";
const plain = new Uint8Array(serialize({ counts: { visits: 42 }, marker: "sealed-state-marker" }));

/** The coded error open() throws (fails the test when it returns). */
function refusal(t: Test, fn: () => unknown, what: string): NodeBinError | undefined {
  try {
    const out = fn();
    t.fail(`${what}: opened (${(out as Uint8Array)?.length} bytes) instead of being refused`);
    return undefined;
  } catch (err) {
    t.ok(err instanceof NodeBinError, `${what}: a NodeBinError`);
    return err as NodeBinError;
  }
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(haystack).indexOf(Buffer.from(needle)) >= 0;
}

t.test("seal - round trip: what is sealed opens as the same bytes, and is not readable on the way", async (t) => {
  const r = ring(k1);
  const sealed = seal(r, plain, CONTEXT);
  t.ok(isSealed(sealed), "laid out as a sealed payload");
  t.equal(sealed.length, plain.length + 4 + 8 + 12 + 16, "magic, key id, nonce, ciphertext, tag");
  const marker = new TextEncoder().encode("sealed-state-marker");
  t.ok(contains(plain, marker), "(the marker's bytes occur in the plaintext)");
  t.notOk(contains(sealed, marker), "the plaintext's marker does not occur in the sealed payload");
  t.notOk(contains(sealed, plain.subarray(0, 16)), "nor do its first 16 bytes");
  t.same([...open(r, sealed, CONTEXT)], [...plain], "opens as the same bytes");
  t.same([...open(r, seal(r, new Uint8Array(), CONTEXT), CONTEXT)], [], "an empty payload too");
  t.not(Buffer.from(seal(r, plain, CONTEXT)).toString("hex"), Buffer.from(sealed).toString("hex"), "sealing twice gives two payloads (fresh nonce)");
});

t.test("seal - every single-byte change (each byte, each of three flips) is refused UNAUTHENTICATED", async (t) => {
  const r = ring(k1);
  const sealed = seal(r, plain, CONTEXT);
  const codes = new Map<string, number>();
  let opened = 0;
  for (let i = 0; i < sealed.length; i++) {
    for (const flip of [0x01, 0x80, 0xff]) {
      const bad = new Uint8Array(sealed);
      bad[i] = bad[i]! ^ flip;
      try {
        open(r, bad, CONTEXT);
        opened++;
        t.fail(`byte ${i} ^ ${flip.toString(16)}: opened`);
      } catch (err) {
        const code = err instanceof NodeBinError ? err.code : `not coded: ${String(err)}`;
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
    }
  }
  t.equal(opened, 0, `none of ${sealed.length * 3} changed payloads opened`);
  t.same([...codes.keys()], ["UNAUTHENTICATED"], "every refusal is UNAUTHENTICATED");
});

t.test("seal - another context, a foreign key, a truncated or unsealed payload: refused, nothing returned", async (t) => {
  const r = ring(k1);
  const sealed = seal(r, plain, CONTEXT);
  const cases: [string, () => unknown][] = [
    ["another component's context", () => open(r, sealed, "state greeter")],
    ["an empty context", () => open(r, sealed, "")],
    ["a ring without its key", () => open(ring(k2), sealed, CONTEXT)],
    ["sealed under a foreign key", () => open(r, seal(ring(k3), plain, CONTEXT), CONTEXT)],
    ["the tag cut off", () => open(r, sealed.subarray(0, sealed.length - 16), CONTEXT)],
    ["one byte short", () => open(r, sealed.subarray(0, sealed.length - 1), CONTEXT)],
    ["the header only", () => open(r, sealed.subarray(0, 24), CONTEXT)],
    ["one byte more", () => open(r, new Uint8Array([...sealed, 0]), CONTEXT)],
    ["empty", () => open(r, new Uint8Array(), CONTEXT)],
    ["the plaintext itself (never sealed)", () => open(r, plain, CONTEXT)],
    ["the magic and zeros", () => open(r, new Uint8Array([0x4e, 0x42, 0x53, 0x31, ...new Uint8Array(40)]), CONTEXT)],
  ];
  for (const [what, fn] of cases) {
    const err = refusal(t, fn, what);
    t.equal(err?.code, "UNAUTHENTICATED", `${what}: UNAUTHENTICATED`);
  }
  const foreign = refusal(t, () => open(ring(k2), sealed, CONTEXT), "foreign key");
  t.equal(foreign?.details.key, r.current.id, "a foreign payload's refusal names the key that sealed it (its public id)");
  t.notMatch(foreign?.message ?? "", /nodebin-key-v1:/, "never the key itself");
});

t.test("seal - rotation: a payload sealed with a key of the ring other than the current one opens", async (t) => {
  const before = ring(k1);
  const sealed = seal(before, plain, CONTEXT);
  const rotated = ring(k2, k1); // the new key first (current), the old one still accepted
  t.equal(rotated.current.id, ring(k2).current.id, "k2 is current");
  t.same([...open(rotated, sealed, CONTEXT)], [...plain], "sealed under k1, opened by a ring whose current key is k2");
  const fresh = seal(rotated, plain, CONTEXT);
  t.same([...open(ring(k2), fresh, CONTEXT)], [...plain], "what the rotated ring seals uses the current key...");
  t.equal(refusal(t, () => open(before, fresh, CONTEXT), "old ring, new payload")?.code, "UNAUTHENTICATED", "...which a ring holding only k1 refuses");
  t.equal(refusal(t, () => open(ring(k2), sealed, CONTEXT), "k1 retired")?.code, "UNAUTHENTICATED", "once k1 is retired, its payloads no longer open");
});

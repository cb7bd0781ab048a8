// Component code shared between hosts (src/governor/code-share.ts): packed by the rules of the
// content hash, sealed with the cluster key for exactly one component and hash, and refused on
// the receiving side unless it opens, is safe to write and hashes right. CodeShare's fetch against
// a real serving CodeShare (the control call replaced by a direct one): sources in order, one
// fetch per version, a verified copy reused, old versions pruned, nothing written without a key.
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { DefaultLifecycle } from "../../src/governor/plugins/lifecycle.ts";
import {
  CodeShare,
  KEEP_VERSIONS,
  MAX_CODE_BYTES,
  MAX_ENTRIES,
  archiveHash,
  checkEntries,
  openArchive,
  packComponent,
  sealArchive,
  unpackArchive,
  type ArchiveEntry,
  type ComponentArchive,
} from "../../src/governor/code-share.ts";
import type { ControlCall } from "../../src/governor/ports.ts";
import { hashComponent } from "../../src/governor/scan.ts";
import { DEFAULT_SETTINGS, GovernorConfig } from "../../src/governor/settings.ts";
import { GovernorState, type ComponentState } from "../../src/governor/state.ts";
import { systemClock } from "../../src/platform/clock.ts";
import { newKeyLine, parseKeyring, type Keyring } from "../../src/security/keys.ts";
import { seal } from "../../src/security/seal.ts";
import { FETCH_COMPONENT, readReply, readRequest } from "../../src/wire/control.ts";
import { nodebinRoot } from "../../src/wire/envelope.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { decodeMessage, encodeMessage } from "../../src/wire/message.ts";
import { rejection, thrown } from "../lib/expect-error.ts";
import { examplePath } from "../lib/fixture-components.ts";
import { silentLogger } from "../lib/recording-logger.ts";

const ring = (...lines: string[]): Keyring => parseKeyring(lines.join("\n"), "test.key");
const K1 = ring(newKeyLine());
const K2 = ring(newKeyLine());
const ArchiveType = nodebinRoot.lookupType("nodebin.ComponentArchive");

function tmp(t: { teardown(fn: () => unknown): void }, prefix = "nodebin-code-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A component with a subdirectory, an executable file, a link inside, and what is not content (a dot file, node_modules). */
function sampleComponent(t: { teardown(fn: () => unknown): void }): string {
  const dir = join(tmp(t), "sample");
  cpSync(examplePath("greeter"), dir, { recursive: true });
  mkdirSync(join(dir, "lib", "deep"), { recursive: true });
  writeFileSync(join(dir, "lib", "deep", "util.js"), "export const x = 1;\n");
  writeFileSync(join(dir, "run.sh"), "#!/bin/sh\necho hi\n");
  chmodSync(join(dir, "run.sh"), 0o755);
  symlinkSync("lib/deep/util.js", join(dir, "util.js"));
  symlinkSync("../greeter.proto", join(dir, "lib", "proto-link"));
  writeFileSync(join(dir, ".secret"), "not content");
  mkdirSync(join(dir, "node_modules", "dep"), { recursive: true });
  writeFileSync(join(dir, "node_modules", "dep", "index.js"), "not content");
  return dir;
}

const file = (path: string, text = "x"): ArchiveEntry => ({ path, data: new TextEncoder().encode(text), mode: 0o644, link: "" });
const link = (path: string, target: string): ArchiveEntry => ({ path, data: new Uint8Array(0), mode: 0, link: target });
const archiveOf = (name: string, entries: ArchiveEntry[]): ComponentArchive => ({ name, hash: archiveHash(entries), entries });

t.test("code share - pack and unpack: the archive hashes as the directory, and unpacks to a directory of that hash", async (t) => {
  const dir = sampleComponent(t);
  const archive = packComponent(dir, "sample");
  t.equal(archive.hash, hashComponent(dir).hash, "the archive's hash is hashComponent's");
  t.same(
    archive.entries.map((e) => e.path),
    ["greeter.proto", "index.ts", "lib/deep/util.js", "lib/proto-link", "run.sh", "util.js"],
    "files and links, sorted; dot files and node_modules left out",
  );
  t.same(packComponent(dir, "sample"), archive, "deterministic");
  const sealed = sealArchive(K1, archive);
  t.notOk(Buffer.from(sealed).includes(Buffer.from("export const x")), "no file's contents are readable in the sealed bytes");
  const opened = openArchive(K1, sealed, "sample", archive.hash);
  const out = join(tmp(t), "sample");
  unpackArchive(opened, out);
  t.equal(hashComponent(out).hash, archive.hash, "the unpacked directory hashes the same");
  t.equal(readlinkSync(join(out, "util.js")), "lib/deep/util.js", "a link stays a link, its target as written");
  t.ok(lstatSync(join(out, "lib", "proto-link")).isSymbolicLink());
  t.equal(statSync(join(out, "run.sh")).mode & 0o777, 0o700, "an executable stays executable (owner only)");
  t.equal(statSync(join(out, "index.ts")).mode & 0o777, 0o600, "other files: owner only");
  t.equal(statSync(join(out, "lib")).mode & 0o777, 0o700, "directories: owner only");
  t.notOk(existsSync(join(out, ".secret")), "no dot file");
});

t.test("code share - the wire messages round-trip through the codec", async (t) => {
  const req = { name: "greeter", hash: "a".repeat(64) };
  t.same(readRequest(FETCH_COMPONENT, decodeMessage(FETCH_COMPONENT.schema.requestType, encodeMessage(FETCH_COMPONENT.schema.requestType, req, "req"), "req")), req);
  const reply = { sealed: new Uint8Array([1, 2, 3]) };
  const back = readReply(FETCH_COMPONENT, decodeMessage(FETCH_COMPONENT.schema.responseType, encodeMessage(FETCH_COMPONENT.schema.responseType, reply, "reply"), "reply"));
  t.same([...back.sealed], [1, 2, 3]);
  const archive = archiveOf("a", [file("x.js", "1"), link("y", "x.js")]);
  const decoded = ArchiveType.toObject(decodeMessage(ArchiveType, encodeMessage(ArchiveType, archive, "a"), "a"), { defaults: true, arrays: true });
  t.same(decoded.entries.map((e: ArchiveEntry) => [e.path, e.link, e.mode, Buffer.from(e.data).toString()]), [["x.js", "", 0o644, "1"], ["y", "x.js", 0, ""]]);
});

t.test("code share - a seal opens only with the cluster's key, for that component at that hash", async (t) => {
  const archive = archiveOf("a", [file("index.js")]);
  const sealed = sealArchive(K1, archive);
  t.equal(thrown(() => openArchive(K2, sealed, "a", archive.hash)).code, "UNAUTHENTICATED", "another cluster's key");
  t.equal(thrown(() => openArchive(K1, sealed, "b", archive.hash)).code, "UNAUTHENTICATED", "asked as another component");
  const other = "0".repeat(64);
  t.equal(thrown(() => openArchive(K1, sealed, "a", other)).code, "UNAUTHENTICATED", "asked at another hash");
  const flipped = new Uint8Array(sealed);
  flipped[flipped.length - 20]! ^= 1;
  t.equal(thrown(() => openArchive(K1, flipped, "a", archive.hash)).code, "UNAUTHENTICATED", "one byte changed on the way");
  t.equal(thrown(() => openArchive(K1, encodeMessage(ArchiveType, archive, "a"), "a", archive.hash)).code, "UNAUTHENTICATED", "never sealed");
});

t.test("code share - an archive that does not hash to what it claims is DATA_LOSS", async (t) => {
  const archive = archiveOf("a", [file("index.js", "honest")]);
  const tampered: ComponentArchive = { ...archive, entries: [file("index.js", "evil!!")] };
  // A member's key seals it (the seal is not what catches this): the hash is.
  const sealed = seal(K1, encodeMessage(ArchiveType, tampered, "a"), `code a ${archive.hash}`);
  const err = thrown(() => openArchive(K1, sealed, "a", archive.hash));
  t.equal(err.code, "DATA_LOSS");
  t.equal(err.details.got, archiveHash(tampered.entries));
  const named = seal(K1, encodeMessage(ArchiveType, { ...archive, name: "b" }, "a"), `code a ${archive.hash}`);
  t.equal(thrown(() => openArchive(K1, named, "a", archive.hash)).code, "INVALID_ARGUMENT", "an archive of another component inside");
});

t.test("code share - entries that would write outside, or write what the hash does not cover, are refused", async (t) => {
  const cases: [string, ArchiveEntry[]][] = [
    ["a parent segment", [file("../escape.js")]],
    ["a parent segment further down", [file("lib/../../escape.js")]],
    ["an absolute path", [file("/etc/cron.d/x")]],
    ["a drive path", [file("C:/x")]],
    ["a backslash", [file("lib\\..\\x")]],
    ["an empty segment", [file("lib//x")]],
    ["a dot segment", [file("./x")]],
    ["a dot file (not in the hash)", [file(".npmrc")]],
    ["node_modules (not in the hash)", [file("node_modules/x/index.js")]],
    ["a NUL", [file("x\0y")]],
    ["an empty path", [file("")]],
    ["a repeated path", [file("a"), file("a")]],
    ["out of order", [file("b"), file("a")]],
    ["a file below a file", [file("a"), file("a/b")]],
    ["a file below a link", [link("lib", "."), file("lib/x")]],
    ["a link out", [link("x", "../../etc/passwd")]],
    ["a link out from below", [link("lib/x", "../../y")]],
    ["an absolute link", [link("x", "/etc/passwd")]],
    ["a link through a link that points up", [link("l1", "."), link("l2", "l1/../x")]],
    ["a link with contents", [{ ...link("x", "y"), data: new Uint8Array([1]) }]],
  ];
  for (const [what, entries] of cases) {
    const err = thrown(() => checkEntries("a", entries));
    t.equal(err.code, "INVALID_ARGUMENT", what);
    const out = join(tmp(t), "a");
    t.equal(thrown(() => unpackArchive(archiveOf("a", entries), out)).code, "INVALID_ARGUMENT", `${what}: not unpacked`);
    t.notOk(existsSync(out), `${what}: nothing written`);
  }
  // Links inside are fine, to a file or a directory, up and down again.
  t.doesNotThrow(() => checkEntries("a", [link("d", "lib"), file("lib/a.js"), link("lib/b.js", "../src/c.js"), file("src/c.js"), link("x", "d")]));
  t.equal(thrown(() => checkEntries("a", [link("d", "lib"), link("e", "d/../../x"), file("lib/a.js")])).code, "INVALID_ARGUMENT", "a path through a link, even one inside, is not read lexically");
});

t.test("code share - bounds: too many bytes, too many files, a sealed archive too large", async (t) => {
  const dir = join(tmp(t), "big");
  mkdirSync(dir);
  writeFileSync(join(dir, "index.js"), "");
  writeFileSync(join(dir, "blob.bin"), Buffer.alloc(MAX_CODE_BYTES + 1));
  t.equal(thrown(() => packComponent(dir, "big")).code, "RESOURCE_EXHAUSTED", "a component past MAX_CODE_BYTES is not packed");
  const many = Array.from({ length: MAX_ENTRIES + 1 }, (_, i) => file(`f${String(i).padStart(5, "0")}`));
  t.equal(thrown(() => checkEntries("a", many)).code, "RESOURCE_EXHAUSTED", "past MAX_ENTRIES");
  const huge = [file("a", "x"), { ...file("b"), data: new Uint8Array(MAX_CODE_BYTES) }];
  t.equal(thrown(() => checkEntries("a", huge)).code, "RESOURCE_EXHAUSTED", "past MAX_CODE_BYTES in an archive");
  t.equal(thrown(() => openArchive(K1, new Uint8Array(15 * 1024 * 1024), "a", "0".repeat(64))).code, "RESOURCE_EXHAUSTED", "a sealed payload past the bound is not opened");
  t.equal(thrown(() => checkEntries("a", [file(`${"d/".repeat(600)}x`)])).code, "RESOURCE_EXHAUSTED", "a path past MAX_PATH_BYTES");
});

/** A governor's side of the share, serving `components` (name -> dir) and recording installs. */
function share(t: { teardown(fn: () => unknown): void }, options: { key?: Keyring; components?: Record<string, string>; call?: ControlCall } = {}) {
  const dir = join(tmp(t), "fetched");
  const installed: { name: string; hash: string; root: string; from: string }[] = [];
  const inUse = new Map<string, Set<string>>();
  const s = new CodeShare({
    dir,
    keyring: () => options.key,
    call: options.call ?? (() => Promise.reject(new NodeBinError("UNAVAILABLE", "no network here"))),
    source: (name, hash) => {
      const d = options.components?.[name];
      return d && hashComponent(d).hash === hash ? d : undefined;
    },
    install: (name, hash, root, from) => installed.push({ name, hash, root, from }),
    inUse: (name) => inUse.get(name) ?? new Set(),
    log: silentLogger,
  });
  return { share: s, dir, installed, inUse };
}

/** A control call answered by the CodeShare serving at each endpoint (as the governor's control server would: its error, or its reply). */
function callTo(servers: Record<string, CodeShare | NodeBinError>, calls: string[] = []): ControlCall {
  return (async (method: unknown, request: unknown, via: string) => {
    calls.push(via);
    if (method !== FETCH_COMPONENT) throw new Error("only FetchComponent is asked");
    const server = servers[via];
    if (!server) throw new NodeBinError("UNAVAILABLE", `nobody at ${via}`);
    if (server instanceof NodeBinError) throw server;
    return server.serve(request as { name: string; hash: string });
  }) as ControlCall;
}

t.test("code share - serving: only with a cluster key, only what it has at that hash", async (t) => {
  const dir = sampleComponent(t);
  const hash = hashComponent(dir).hash;
  const unkeyed = share(t, { components: { sample: dir } }).share;
  t.equal(thrown(() => unkeyed.serve({ name: "sample", hash })).code, "FAILED_PRECONDITION", "no cluster key: refused");
  const keyed = share(t, { key: K1, components: { sample: dir } }).share;
  t.equal(thrown(() => keyed.serve({ name: "other", hash })).code, "NOT_FOUND", "an unknown name");
  t.equal(thrown(() => keyed.serve({ name: "sample", hash: "0".repeat(64) })).code, "NOT_FOUND", "a hash it does not have");
  t.equal(thrown(() => keyed.serve({ name: "../etc", hash })).code, "INVALID_ARGUMENT", "not a name");
  t.equal(thrown(() => keyed.serve({ name: "sample", hash: "nothex" })).code, "INVALID_ARGUMENT", "not a hash");
  const reply = keyed.serve({ name: "sample", hash });
  t.equal(openArchive(K1, reply.sealed, "sample", hash).entries.length, 6, "its archive, sealed for it");
});

t.test("code share - fetch: the first source that has it serves; verified, installed in its own components directory; one fetch per version; reused", async (t) => {
  const dir = sampleComponent(t);
  const hash = hashComponent(dir).hash;
  const server = share(t, { key: K1, components: { sample: dir } }).share;
  const empty = share(t, { key: K1 }).share;
  const calls: string[] = [];
  const me = share(t, { key: K1, call: callTo({ "tcp://h2": empty, "tcp://h3": server }, calls) });
  const sources = [
    { host: "h1", endpoint: "tcp://h1" },
    { host: "h2", endpoint: "tcp://h2" },
    { host: "h3", endpoint: "tcp://h3" },
  ];
  const [a, b] = [me.share.fetch("sample", hash, sources), me.share.fetch("sample", hash, sources)];
  await Promise.all([a, b]);
  t.same(calls, ["tcp://h1", "tcp://h2", "tcp://h3"], "sources in order (down, NOT_FOUND, has it), and asked once for two fetches at once");
  t.equal(me.installed.length, 1, "installed once");
  const root = join(me.dir, `sample@${hash}`);
  t.same(me.installed[0], { name: "sample", hash, root, from: "h3" });
  t.same(readdirSync(root).sort(), [".from", "sample"], "a components directory holding only it");
  t.equal(hashComponent(join(root, "sample")).hash, hash);
  t.equal(statSync(root).mode & 0o777, 0o700);
  t.same(readdirSync(me.dir), [`sample@${hash}`], "no temporary directory left");

  await me.share.fetch("sample", hash, sources);
  t.equal(calls.length, 3, "fetched again: the verified copy is reused, nobody is asked");
  t.same(me.installed[1], { name: "sample", hash, root, from: "h3" });

  // A copy changed on disk is not reused: it is fetched again.
  writeFileSync(join(root, "sample", "index.ts"), "tampered");
  await me.share.fetch("sample", hash, sources);
  t.equal(calls.length, 6, "a copy that no longer hashes right is fetched again");
  t.equal(hashComponent(join(root, "sample")).hash, hash);
});

t.test("code share - fetch refusals: no key (nothing written), no source, only bad sources", async (t) => {
  const dir = sampleComponent(t);
  const hash = hashComponent(dir).hash;
  const server = share(t, { key: K1, components: { sample: dir } }).share;
  const calls: string[] = [];
  const unkeyed = share(t, { call: callTo({ "tcp://h1": server }, calls) });
  const err = await rejection(unkeyed.share.fetch("sample", hash, [{ host: "h1", endpoint: "tcp://h1" }]));
  t.equal(err.code, "FAILED_PRECONDITION", "without a cluster key");
  t.same(calls, [], "nobody asked");
  t.notOk(existsSync(unkeyed.dir), "nothing written");

  const me = share(t, { key: K1, call: callTo({ "tcp://h1": server, "tcp://h4": share(t, { key: K1 }).share }) });
  t.equal((await rejection(me.share.fetch("sample", hash, []))).code, "NOT_FOUND", "no source");
  t.equal((await rejection(me.share.fetch("sample", hash, [{ host: "h4", endpoint: "tcp://h4" }]))).code, "NOT_FOUND", "no source has it");
  t.equal((await rejection(me.share.fetch("../x", hash, [{ host: "h1", endpoint: "tcp://h1" }]))).code, "INVALID_ARGUMENT", "not a name");

  // Sources of another cluster, and a member sending tampered code: the most telling error wins.
  const foreign = share(t, { key: K2, components: { sample: dir } }).share;
  const other = share(t, { key: K1, call: callTo({ "tcp://f": foreign, "tcp://h4": share(t, { key: K1 }).share }) });
  const wrong = await rejection(other.share.fetch("sample", hash, [{ host: "h4", endpoint: "tcp://h4" }, { host: "f", endpoint: "tcp://f" }]));
  t.equal(wrong.code, "UNAUTHENTICATED", "sealed with another key");
  t.equal(wrong.details["source h4"], "NOT_FOUND");
  t.equal(wrong.details["source f"], "UNAUTHENTICATED");
  const liar: ControlCall = (async () => {
    const archive = packComponent(dir, "sample");
    archive.entries[0] = { ...archive.entries[0]!, data: new TextEncoder().encode("syntax = evil;") };
    return { sealed: seal(K1, encodeMessage(ArchiveType, archive, "a"), `code sample ${hash}`) };
  }) as ControlCall;
  const lied = share(t, { key: K1, call: liar });
  t.equal((await rejection(lied.share.fetch("sample", hash, [{ host: "m", endpoint: "tcp://m" }]))).code, "DATA_LOSS", "code that does not hash");
  t.same(existsSync(lied.dir) ? readdirSync(lied.dir) : [], [], "nothing kept of it");
  t.equal(lied.installed.length, 0);
  const slow = share(t, { key: K1, call: (async () => Promise.reject(new NodeBinError("DEADLINE_EXCEEDED", "slow"))) as ControlCall });
  t.equal((await rejection(slow.share.fetch("sample", hash, [{ host: "s", endpoint: "tcp://s" }]))).code, "DEADLINE_EXCEEDED", "a source that does not answer");
});

t.test("code share - at most KEEP_VERSIONS versions of a component are kept, never one a child runs", async (t) => {
  const base = tmp(t);
  const versions: { dir: string; hash: string }[] = [];
  for (let i = 0; i < 4; i++) {
    const dir = join(base, `v${i}`, "sample");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "index.js"), `export const v = ${i};\n`);
    versions.push({ dir, hash: hashComponent(dir).hash });
  }
  let current = 0;
  const me = share(t, {
    key: K1,
    call: (async (_m: unknown, req: { hash: string }) => {
      const v = versions[current]!;
      if (req.hash !== v.hash) throw new NodeBinError("NOT_FOUND", "no");
      return { sealed: sealArchive(K1, packComponent(v.dir, "sample")) };
    }) as ControlCall,
  });
  me.inUse.set("sample", new Set([versions[0]!.hash]));
  for (current = 0; current < 4; current++) {
    await me.share.fetch("sample", versions[current]!.hash, [{ host: "h", endpoint: "tcp://h" }]);
    // mtimes order the versions: keep them apart on coarse file systems
    const root = join(me.dir, `sample@${versions[current]!.hash}`);
    const when = new Date(Date.now() - (10 - current) * 10_000);
    (await import("node:fs")).utimesSync(root, when, when);
  }
  const left = readdirSync(me.dir).sort();
  const expected = [0, 2, 3].map((i) => `sample@${versions[i]!.hash}`).sort();
  t.same(left, expected, `the ${KEEP_VERSIONS} newest, and the one a child runs`);
  t.equal(readFileSync(join(me.dir, `sample@${versions[3]!.hash}`, "sample", "index.js"), "utf8"), "export const v = 3;\n");
});

t.test("code share - a fetched component's min is 0, and the lifecycle strategy takes its last idle node", async (t) => {
  const stateDir = tmp(t);
  const state = new GovernorState({ clock: systemClock, host: "h", componentsDir: stateDir, capacity: 4 });
  const config = new GovernorConfig(state, { stateDir });
  const own: ComponentState = { name: "own", hash: "x", desired: 1, startFailures: 0, backoffUntil: 0, restarts: 0, capacityRequests: 0, rolling: false, removed: false, manifest: { min: 0, max: 4 } };
  const fetched: ComponentState = { ...own, name: "spilled", fetched: { from: "h1", root: "/x" } };
  t.same(config.limits(own), { min: 1, max: 4 }, "a component of the directory keeps a node");
  t.same(config.limits(fetched), { min: 0, max: 4 }, "a fetched one need not");
  const lifecycle = new DefaultLifecycle({ ...DEFAULT_SETTINGS });
  const now = Date.now();
  const idle = { pid: 7, component: "spilled", phase: "ready" as const, startedAt: now - 120_000, lastPongAt: now, missedPongs: 0, handled: 3, queued: 0, capacity: 100, queueWaitMs: 0, idleMs: DEFAULT_SETTINGS.idleMs + 1, restarts: 0 };
  const decisions = lifecycle.decide({ capacity: 4, used: 1, now }, [{ name: "spilled", ...config.limits(fetched), children: [idle], capacityRequests: 0 }]);
  t.same(decisions.map((d) => [d.action, d.component]), [["shrink", "spilled"]], "its last node goes when idle");
});

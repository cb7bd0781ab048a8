import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { COMPONENT_LOCK, ComponentScanner, DIR_LOCK, diffComponents, hashComponent, type ComponentChange } from "../../src/governor/scan.ts";
import { NodeBinError } from "../../src/wire/errors.ts";
import { thrown } from "../lib/expect-error.ts";

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), "node-bin-scan-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes `files` (relative path → contents) below `dir`, creating directories. */
function write(dir: string, files: Record<string, string>): void {
  for (const [rel, text] of Object.entries(files)) {
    const file = join(dir, rel);
    mkdirSync(join(file, ".."), { recursive: true });
    writeFileSync(file, text);
  }
}

const COMPONENT = { "index.js": "export function Hello() {}\n", "hello.proto": 'syntax = "proto3";\n' };

/**
 * A scanner whose reports are collected; `until` waits for the collected
 * changes to satisfy a condition (a generous timeout, never a fixed sleep).
 */
function watched(t: Test, dir: string, options: { intervalMs?: number; debounceMs?: number } = {}) {
  const changes: ComponentChange[] = [];
  const errors: Error[] = [];
  let wake: (() => void) | undefined;
  const scanner = new ComponentScanner({
    dir,
    intervalMs: options.intervalMs ?? 60_000,
    debounceMs: options.debounceMs ?? 20,
    onChange: (c) => {
      changes.push(...c);
      wake?.();
    },
    onError: (e) => {
      errors.push(e);
      wake?.();
    },
  });
  t.teardown(() => scanner.close());
  const until = async (what: string, ok: () => boolean, timeoutMs = 15_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!ok()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; changes so far: ${JSON.stringify(changes)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = undefined;
    }
  };
  /** The last reported hash of `name` (undefined once removed). */
  const last = (name: string): string | undefined => {
    let hash: string | undefined;
    for (const c of changes) if (c.name === name) hash = c.type === "removed" ? undefined : c.hash;
    return hash;
  };
  return { scanner, changes, errors, until, last };
}

t.test("scan - hash: stable across copies, sensitive to contents, paths and added files", async (t) => {
  const root = tmp(t);
  const a = join(root, "a");
  const b = join(root, "b");
  write(a, { ...COMPONENT, "lib/util.js": "x" });
  write(b, { "lib/util.js": "x", ...COMPONENT });
  const ha = hashComponent(a);
  t.match(ha.hash, /^[0-9a-f]{64}$/);
  t.equal(ha.files, 3);
  t.same(hashComponent(b), ha, "same files, written in another order: same hash");
  t.same(hashComponent(a), ha, "stable");

  writeFileSync(join(b, "lib/util.js"), "y");
  t.not(hashComponent(b).hash, ha.hash, "contents count");
  writeFileSync(join(b, "lib/util.js"), "x");
  t.equal(hashComponent(b).hash, ha.hash, "back to the same contents: back to the same hash");
  renameSync(join(b, "lib/util.js"), join(b, "lib/util2.js"));
  t.not(hashComponent(b).hash, ha.hash, "paths count");
  renameSync(join(b, "lib/util2.js"), join(b, "lib/util.js"));
  write(b, { "lib/empty.txt": "" });
  t.not(hashComponent(b).hash, ha.hash, "an added empty file counts");
  t.equal(hashComponent(b).files, 4);

  // Path and contents are framed: moving bytes between a name and its contents changes the hash.
  const c = join(root, "c");
  const d = join(root, "d");
  write(c, { ab: "c" });
  write(d, { a: "bc" });
  t.not(hashComponent(c).hash, hashComponent(d).hash);
});

t.test("scan - hash: node_modules, dot-files, dot-directories and the lock file are not content", async (t) => {
  const root = tmp(t);
  const a = join(root, "a");
  write(a, COMPONENT);
  const before = hashComponent(a);
  write(a, {
    "node_modules/dep/index.js": "1",
    "lib/node_modules/x.js": "1",
    ".env": "SECRET=1",
    ".git/HEAD": "ref",
    "lib/.cache/x": "1",
    [COMPONENT_LOCK]: "",
  });
  t.same(hashComponent(a), before);
  write(a, { "lib/real.js": "1" });
  t.not(hashComponent(a).hash, before.hash, "files beside the ignored ones still count");
});

t.test("scan - hash: a symlink counts by its target, never followed: outside files, huge files and loops cannot reach the hash", async (t) => {
  const root = tmp(t);
  const a = join(root, "a");
  write(a, { ...COMPONENT, "shared/x.js": "1" });
  write(root, { "outside.txt": "one", "outside-dir/secret.js": "s" });
  symlinkSync(join(root, "outside.txt"), join(a, "linked.txt"));
  const h1 = hashComponent(a);
  t.same({ files: h1.files, links: h1.links }, { files: 3, links: 1 }, "the link is one entry, not the file it reaches");
  writeFileSync(join(root, "outside.txt"), "two");
  t.equal(hashComponent(a).hash, h1.hash, "what the link reaches is not read: a file outside the component does not count");

  rmSync(join(a, "linked.txt"));
  symlinkSync(join(root, "outside-dir"), join(a, "linked.txt"));
  const h2 = hashComponent(a);
  t.not(h2.hash, h1.hash, "a link to another target is a change");
  t.same({ files: h2.files, links: h2.links }, { files: 3, links: 1 }, "a link to a directory is not walked: outside-dir/secret.js is not content");

  rmSync(join(a, "linked.txt"));
  writeFileSync(join(a, "linked.txt"), join(root, "outside-dir"));
  t.not(hashComponent(a).hash, h2.hash, "a file holding the link's target as text is not the link");
  rmSync(join(a, "linked.txt"));

  // A file too big to read whole (readFileSync refuses 2 GiB and more): sparse, so it costs no disk.
  const huge = join(root, "huge.bin");
  writeFileSync(huge, "");
  truncateSync(huge, 3 * 2 ** 30);
  symlinkSync(huge, join(a, "huge.bin"));
  symlinkSync(a, join(a, "shared", "loop")); // back to the component's root
  symlinkSync("self", join(a, "self")); // a link to itself
  symlinkSync(join(root, "missing"), join(a, "dangling"));
  const h3 = hashComponent(a);
  t.same({ files: h3.files, links: h3.links }, { files: 3, links: 4 }, "the huge file is not read, the loops end at once, the dangling link counts as a link");
  t.equal(hashComponent(a).hash, h3.hash, "and the hash is stable");
});

t.test("scan - diffComponents: added, removed, changed, sorted by name", async (t) => {
  const before = new Map([["b", "1"], ["c", "1"], ["d", "1"]]);
  const after = new Map([["a", "1"], ["c", "2"], ["d", "1"]]);
  t.same(diffComponents(before, after), [
    { type: "added", name: "a", hash: "1" },
    { type: "removed", name: "b" },
    { type: "changed", name: "c", hash: "2" },
  ]);
  t.same(diffComponents(after, after), []);
});

t.test("scan - scan(): one hash per component directory; dot entries, node_modules and plain files are skipped", async (t) => {
  const dir = tmp(t);
  write(join(dir, "greeter"), COMPONENT);
  write(join(dir, "counter"), { ...COMPONENT, "index.js": "// counter" });
  write(join(dir, ".greeter.deploy-1234"), COMPONENT);
  write(join(dir, "node_modules", "x"), COMPONENT);
  write(dir, { "README.md": "hi", ".hidden": "" });
  symlinkSync(join(dir, "greeter"), join(dir, "linked"));
  const scanner = new ComponentScanner({ dir, onChange: () => t.fail("scan() reports nothing") });
  const result = scanner.scan();
  t.same([...result.components.keys()], ["counter", "greeter", "linked"]);
  t.equal(result.components.get("greeter"), hashComponent(join(dir, "greeter")).hash);
  t.equal(result.components.get("linked"), result.components.get("greeter"), "a symlinked component directory is followed");
  t.not(result.components.get("counter"), result.components.get("greeter"));
  t.same({ ...result, components: undefined }, { components: undefined, locked: false, lockedComponents: [], staleLocks: [], errors: [] });

  const missing = new ComponentScanner({ dir: join(dir, "nope"), onChange: () => {} });
  const err = thrown(() => missing.scan());
  t.equal(err.code, "NOT_FOUND");
  t.match(err.message, /nope does not exist/);
});

t.test("scan - lock files: the directory lock pauses everything; a component lock keeps its previous hash; stale locks are flagged", async (t) => {
  const dir = tmp(t);
  write(join(dir, "greeter"), COMPONENT);
  write(join(dir, "counter"), COMPONENT);
  const { scanner, changes, errors } = watched(t, dir, { intervalMs: 60_000 });
  const baseline = scanner.start();
  const greeterHash = baseline.components.get("greeter")!;
  t.same(changes, [], "start() reports nothing");

  // A component lock: the change under it is not seen, the old hash is kept.
  write(join(dir, "greeter"), { [COMPONENT_LOCK]: "", "index.js": "// new" });
  write(join(dir, "fresh"), { ...COMPONENT, [COMPONENT_LOCK]: "" });
  let r = scanner.scan();
  t.same(r.lockedComponents, ["fresh", "greeter"]);
  t.equal(r.components.get("greeter"), greeterHash, "locked: previous hash kept");
  t.notOk(r.components.has("fresh"), "locked and never seen: absent");
  t.same(r.staleLocks, []);
  scanner.rescan();
  t.same(changes, [], "no event while locked");

  // Stale: still honoured, but listed.
  const old = new Date(Date.now() - 11 * 60_000);
  utimesSync(join(dir, "greeter", COMPONENT_LOCK), old, old);
  r = scanner.scan();
  t.same(r.staleLocks, [join(dir, "greeter", COMPONENT_LOCK)]);
  t.same(r.lockedComponents, ["fresh", "greeter"], "a stale lock still locks");
  const shortStale = new ComponentScanner({ dir, staleLockMs: 1, onChange: () => {} });
  utimesSync(join(dir, "fresh", COMPONENT_LOCK), new Date(Date.now() - 1000), new Date(Date.now() - 1000));
  t.same(shortStale.scan().staleLocks.sort(), [join(dir, "fresh", COMPONENT_LOCK), join(dir, "greeter", COMPONENT_LOCK)], "staleLockMs is configurable");

  // The directory lock: nothing is scanned or reported, even for unlocked components.
  write(dir, { [DIR_LOCK]: "" });
  rmSync(join(dir, "greeter", COMPONENT_LOCK));
  rmSync(join(dir, "fresh", COMPONENT_LOCK));
  write(join(dir, "counter"), { "index.js": "// changed" });
  r = scanner.scan();
  t.equal(r.locked, true);
  t.same(r.components, baseline.components, "locked: the last reported state");
  t.same(r.staleLocks, []);
  scanner.rescan();
  t.same(changes, [], "no event while the directory is locked");
  utimesSync(join(dir, DIR_LOCK), old, old);
  t.same(scanner.scan().staleLocks, [join(dir, DIR_LOCK)], "a stale directory lock is flagged");

  // Locks gone: everything shows up at once.
  rmSync(join(dir, DIR_LOCK));
  scanner.rescan();
  t.same(changes, [
    { type: "changed", name: "counter", hash: hashComponent(join(dir, "counter")).hash },
    { type: "added", name: "fresh", hash: hashComponent(join(dir, "fresh")).hash },
    { type: "changed", name: "greeter", hash: hashComponent(join(dir, "greeter")).hash },
  ]);
  t.same(errors, []);
});

t.test("scan - start(): file changes are reported as added, changed and removed (watcher)", async (t) => {
  const dir = tmp(t);
  write(join(dir, "greeter"), COMPONENT);
  const { scanner, changes, until, last } = watched(t, dir, { intervalMs: 60_000 });
  const baseline = scanner.start();
  t.same([...baseline.components.keys()], ["greeter"]);

  write(join(dir, "counter"), COMPONENT);
  const counterHash = hashComponent(join(dir, "counter")).hash;
  await until("counter added", () => last("counter") === counterHash);
  t.same(changes.find((c) => c.name === "counter")?.type, "added");

  write(join(dir, "greeter"), { "lib/deep.js": "// nested" });
  const greeterHash = hashComponent(join(dir, "greeter")).hash;
  await until("greeter changed", () => last("greeter") === greeterHash);
  t.ok(changes.filter((c) => c.name === "greeter").every((c) => c.type === "changed"));

  rmSync(join(dir, "counter"), { recursive: true });
  await until("counter removed", () => changes.at(-1)?.type === "removed" && changes.at(-1)?.name === "counter");

  const before = changes.length;
  write(join(dir, "greeter"), { "node_modules/dep.js": "ignored", "lib/.cache": "ignored" });
  write(join(dir, ".greeter.deploy-1"), COMPONENT);
  scanner.rescan();
  t.equal(changes.length, before, "ignored files change nothing");
});

t.test("scan - start(): the periodic rescan finds changes by itself", async (t) => {
  const dir = tmp(t);
  const { scanner, until, last } = watched(t, dir, { intervalMs: 50, debounceMs: 60_000 });
  t.same([...scanner.start().components.keys()], []);
  write(join(dir, "greeter"), COMPONENT);
  const hash = hashComponent(join(dir, "greeter")).hash;
  await until("greeter added", () => last("greeter") === hash);
});

t.test("scan - an unreadable directory is reported once, the state kept, and scanning resumes when it is back", async (t) => {
  const root = tmp(t);
  const dir = join(root, "components");
  write(join(dir, "greeter"), COMPONENT);
  const { scanner, changes, errors, until, last } = watched(t, dir, { intervalMs: 30 });
  scanner.start();
  renameSync(dir, join(root, "away"));
  await until("an error", () => errors.length > 0);
  scanner.rescan();
  scanner.rescan();
  t.equal(errors.length, 1, "reported once, not at every scan");
  t.ok(errors[0] instanceof NodeBinError && errors[0].code === "NOT_FOUND");
  t.same(changes, [], "no removal while the directory is missing");

  renameSync(join(root, "away"), dir);
  write(join(dir, "greeter"), { "index.js": "// v2" });
  const hash = hashComponent(join(dir, "greeter")).hash;
  await until("greeter changed", () => last("greeter") === hash);
  t.equal(errors.length, 1);
});

t.test("scan - onChange that throws does not stop the scanner; close() is idempotent and stops reports", async (t) => {
  const dir = tmp(t);
  const errors: Error[] = [];
  let calls = 0;
  const scanner = new ComponentScanner({
    dir,
    intervalMs: 60_000,
    onChange: () => {
      calls++;
      throw new Error("boom");
    },
    onError: (e) => errors.push(e),
  });
  t.teardown(() => scanner.close());
  scanner.start();
  write(join(dir, "a"), COMPONENT);
  t.doesNotThrow(() => scanner.rescan());
  t.equal(calls, 1);
  t.match(errors.map((e) => e.message), ["boom"]);
  write(join(dir, "b"), COMPONENT);
  scanner.rescan();
  t.equal(calls, 2, "still scanning; the failed report is not repeated");
  scanner.close();
  scanner.close();
  write(join(dir, "c"), COMPONENT);
  scanner.rescan();
  t.equal(calls, 2, "closed: nothing more");
  t.throws(() => scanner.start(), /closed/);
});

t.test("scan - without recursive watch: watches the directory and each component directory", async (t) => {
  const dir = tmp(t);
  write(join(dir, "greeter"), COMPONENT);
  const { scanner, until, last } = watched(t, dir, { intervalMs: 60_000 });
  // As on a platform where fs.watch(dir, { recursive: true }) throws.
  (scanner as unknown as { recursive: boolean }).recursive = false;
  scanner.start();
  write(join(dir, "greeter"), { "index.js": "// v2" });
  let hash = hashComponent(join(dir, "greeter")).hash;
  await until("greeter changed", () => last("greeter") === hash);
  write(join(dir, "counter"), COMPONENT);
  hash = hashComponent(join(dir, "counter")).hash;
  await until("counter added", () => last("counter") === hash);
  write(join(dir, "counter"), { "extra.js": "1" });
  hash = hashComponent(join(dir, "counter")).hash;
  await until("counter changed (a watcher was added for it)", () => last("counter") === hash);
});

// src/runtime/executable.ts from source: not the executable, the cache
// directory's default and override, files written once keyed by name and size,
// and the error for a directory that cannot be written. (Inside the
// executable: test/integration/executable.test.ts.)
import { mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { selfCommand } from "../../src/governor/children.ts";
import { CacheDirError, cacheDir, cachedFile, embeddedProtoDir, executableFile, isSea, loadEmbeddedAddon } from "../../src/runtime/executable.ts";
import { NODEBIN_PROTO_DIR } from "../../src/wire/proto.ts";

t.test("runtime - from source nothing is embedded", async (t) => {
  t.equal(isSea(), false);
  t.equal(executableFile(), undefined);
  t.equal(loadEmbeddedAddon("zeromq.node"), undefined);
  t.equal(embeddedProtoDir(), undefined);
  t.match(NODEBIN_PROTO_DIR, /[\\/]proto[\\/]?$/, "the checkout's proto/");
});

t.test("runtime - selfCommand: the script from source, the executable alone inside the SEA", async (t) => {
  t.same(selfCommand(["/usr/bin/node", "/no/such/script"], "/usr/bin/node", false), { command: "/usr/bin/node", args: [] });
  const script = join(import.meta.dirname, "runtime.test.ts");
  t.same(selfCommand(["/usr/bin/node", script], "/usr/bin/node", false, false), { command: "/usr/bin/node", args: [script] });
  t.same(selfCommand(["/usr/bin/deno", script], "/usr/bin/deno", false, true), { command: "/usr/bin/deno", args: ["run", "-A", script] }, "under Deno: deno run -A <script>");
  t.same(selfCommand(["/opt/app/node-bin", script], "/opt/app/node-bin", true), { command: "/opt/app/node-bin", args: [] }, "argv[1] (a symlink, a bare name) is ignored");
});

t.test("runtime - the cache directory", async (t) => {
  t.same(cacheDir({ NODEBIN_CACHE_DIR: "/x/y" }, "linux"), { dir: "/x/y", fromEnv: true });
  t.same(cacheDir({ XDG_CACHE_HOME: "/xdg" }, "linux"), { dir: "/xdg/node-bin", fromEnv: false });
  t.same(cacheDir({ XDG_CACHE_HOME: "relative" }, "linux"), { dir: join(homedir(), ".cache", "node-bin"), fromEnv: false }, "a relative XDG_CACHE_HOME is ignored, as the spec says");
  t.same(cacheDir({}, "darwin"), { dir: join(homedir(), ".cache", "node-bin"), fromEnv: false });
  t.same(cacheDir({ LOCALAPPDATA: "C:\\Users\\a\\AppData\\Local" }, "win32").dir, join("C:\\Users\\a\\AppData\\Local", "node-bin"));
});

t.test("runtime - cachedFile writes once, replaces a wrong size, and names NODEBIN_CACHE_DIR when it cannot write", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nodebin-cache-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const env = { NODEBIN_CACHE_DIR: join(dir, "cache") };
  const data = Buffer.from("addon bytes");
  let reads = 0;
  const source = () => (reads++, data);
  const file = cachedFile(join("sub", "a-0123.node"), data.length, source, 0o755, env);
  t.equal(file, join(dir, "cache", "sub", "a-0123.node"));
  t.equal(readFileSync(file, "utf8"), "addon bytes");
  t.equal(statSync(join(dir, "cache")).mode & 0o777, 0o700, "the directory is private");
  if (process.platform !== "win32") t.equal(statSync(file).mode & 0o777, 0o755);
  utimesSync(file, 1, 1);
  cachedFile(join("sub", "a-0123.node"), data.length, source, 0o755, env);
  t.equal(reads, 1, "a file of the right size is not written again");
  t.equal(statSync(file).mtimeMs, 1000);

  writeFileSync(file, "trunc");
  cachedFile(join("sub", "a-0123.node"), data.length, source, 0o755, env);
  t.equal(readFileSync(file, "utf8"), "addon bytes", "a file of the wrong size is replaced");

  const blocker = join(dir, "a-file");
  writeFileSync(blocker, "");
  const err = t.throws(() => cachedFile("x", 1, () => Buffer.from("x"), 0o644, { NODEBIN_CACHE_DIR: join(blocker, "sub") })) as CacheDirError;
  t.type(err, CacheDirError);
  t.equal(err.code, "NODEBIN_CACHE_DIR");
  t.equal(err.dir, join(blocker, "sub"));
  t.match(err.message, /^cannot write the cache directory \S+a-file[\\/]sub \(NODEBIN_CACHE_DIR\): ENOTDIR.*set NODEBIN_CACHE_DIR to a writable directory$/);
  const byDefault = t.throws(() => cachedFile("x", 1, () => Buffer.from("x"), 0o644, { XDG_CACHE_HOME: blocker })) as CacheDirError;
  t.match(byDefault.message, /^cannot write the cache directory \S+a-file[\\/]node-bin: ENOTDIR/, "the default directory is named as such");
});

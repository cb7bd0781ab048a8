// Local attacks (issue 11, item 12): a cache directory another user can write
// (they could swap the native addon the executable dlopens), a cached addon
// changed after it was written, a systemd unit running as root unsandboxed,
// install.sh values that smuggle directives into the unit. The symlink
// findings are in test/unit/scan.test.ts and test/unit/deploy.test.ts.
//
// From source everything below runs but the executable's own checks
// (dist/node-bin-<os>-<arch>, `npm run build`), which skip without it.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { CacheDirError, cachedFile, loadCachedAddon } from "../../src/runtime/executable.ts";
import { keyFileText, newKeyLine } from "../../src/security/keys.ts";
import { EXECUTABLE, exeHost, runExe, which } from "../lib/executable.ts";
import { ROOT, runCommand } from "../lib/processes.ts";

const posix = typeof process.getuid === "function";
const isRoot = posix && process.getuid!() === 0;
const exeMissing = existsSync(EXECUTABLE) ? false : `no ${EXECUTABLE}: run \`npm run build\` first (CI does)`;

function tmp(t: Test, prefix = "nodebin-local-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A directory made with exactly `mode` (mkdir's mode goes through the umask). */
function dirWithMode(path: string, mode: number): string {
  mkdirSync(path, { recursive: true });
  chmodSync(path, mode);
  return path;
}

/** Runs `fn`, which must throw a CacheDirError; returns it. */
function refused(t: Test, fn: () => unknown, what: string): CacheDirError {
  const err = t.throws(fn, what) as CacheDirError;
  t.type(err, CacheDirError, `${what}: a CacheDirError`);
  t.equal(err?.code, "NODEBIN_CACHE_DIR");
  t.equal(err?.status, "FAILED_PRECONDITION");
  return err;
}

// ------------------------------------------------------- the cache directory

t.test("cache - a directory others can write, or one above it, is refused before anything is written or read", { skip: posix ? false : "no uids here (Windows)" }, async (t) => {
  const base = tmp(t);
  let reads = 0;
  const data = () => (reads++, Buffer.from("addon"));
  const attempt = (dir: string) => () => cachedFile("zeromq-0123.node", 5, data, 0o755, { NODEBIN_CACHE_DIR: dir });

  const world = dirWithMode(join(base, "world"), 0o777);
  const e1 = refused(t, attempt(world), "a world-writable NODEBIN_CACHE_DIR");
  t.match(e1.message, `refusing the cache directory ${world} (NODEBIN_CACHE_DIR): it is writable by every user (mode 0777)`);
  t.match(e1.message, /another user could swap in a library of theirs/, "says why");
  t.match(e1.message, `Run \`chmod go-w ${world}\`, or set NODEBIN_CACHE_DIR to a directory only you (or root) can change`, "and what to do");
  t.equal(e1.dir, world);
  t.same(readdirSync(world), [], "nothing written there");

  const group = dirWithMode(join(base, "group"), 0o770);
  t.match(refused(t, attempt(group), "a group-writable one").message, "it is writable by its group (mode 0770)");

  // The directory itself private, its parent not: the parent's owner-or-not could rename it away and put theirs in its place.
  const open = dirWithMode(join(base, "open"), 0o777);
  const inOpen = join(open, "cache");
  const e3 = refused(t, attempt(inOpen), "a private directory in a world-writable one");
  t.match(e3.message, `refusing the cache directory ${inOpen} (NODEBIN_CACHE_DIR): ${open}, above it, is writable by every user (mode 0777)`);
  t.notOk(existsSync(inOpen), "not even created");

  // A sticky directory above (what /tmp is) is fine: others cannot rename what is not theirs there.
  const sticky = dirWithMode(join(base, "sticky"), 0o1777);
  const inSticky = join(sticky, "cache");
  const file = cachedFile("zeromq-0123.node", 5, data, 0o755, { NODEBIN_CACHE_DIR: inSticky });
  t.equal(file, join(inSticky, "zeromq-0123.node"));
  t.equal(statSync(inSticky).mode & 0o7777, 0o700, "the cache directory is created 0700");
  t.equal(reads, 1, "written once, for the accepted directory only");
  // ...but not as the cache directory itself.
  const stickyItself = dirWithMode(join(base, "sticky-itself"), 0o1777);
  t.match(refused(t, attempt(stickyItself), "a sticky world-writable cache directory").message, "it is writable by every user (mode 01777)");

  // A symlink is followed once, and where it leads is what is checked (and then used).
  const link = join(base, "link");
  symlinkSync(world, link);
  t.match(refused(t, attempt(link), "a link to a world-writable directory").message, `refusing the cache directory ${link} (NODEBIN_CACHE_DIR), which is ${world}: it is writable by every user`);
  const good = join(base, "good-link");
  symlinkSync(inSticky, good);
  t.equal(cachedFile("zeromq-0123.node", 5, data, 0o755, { NODEBIN_CACHE_DIR: good }), file, "the returned path is the resolved one: the link is not looked up again");

  // Below the cache directory too (the protos' subdirectories).
  dirWithMode(join(inSticky, "proto-x"), 0o777);
  t.match(refused(t, () => cachedFile("proto-x/nodebin/a.proto", 1, data, 0o644, { NODEBIN_CACHE_DIR: inSticky }), "a world-writable subdirectory").message, `${join(inSticky, "proto-x")}, inside it, is writable by every user`);
  t.equal(reads, 1, "nothing else was written");
});

t.test("cache - a directory of another user is refused; one of root is not", { skip: isRoot ? false : "needs root to give a directory to another user" }, async (t) => {
  const base = tmp(t);
  const theirs = dirWithMode(join(base, "theirs"), 0o700);
  chownSync(theirs, 65534, 65534);
  const err = refused(t, () => cachedFile("x.node", 1, () => Buffer.from("x"), 0o755, { NODEBIN_CACHE_DIR: theirs }), "a cache directory owned by uid 65534");
  t.match(err.message, `it belongs to uid 65534, not to you (uid 0) or root`);
  t.match(err.message, `Run \`chown 0 ${theirs}\``);
  const above = dirWithMode(join(base, "above"), 0o755);
  chownSync(above, 65534, 65534);
  t.match(refused(t, () => cachedFile("x.node", 1, () => Buffer.from("x"), 0o755, { NODEBIN_CACHE_DIR: join(above, "cache") }), "inside a directory of uid 65534").message, `${above}, above it, belongs to uid 65534`);
});

t.test("cache - a cached file others could write is not used: it is written again", { skip: posix ? false : "no modes here (Windows)" }, async (t) => {
  const cache = join(tmp(t), "cache");
  const env = { NODEBIN_CACHE_DIR: cache };
  mkdirSync(cache, { mode: 0o700 });
  const file = join(cache, "zeromq-0123.node");
  writeFileSync(file, "plant");
  chmodSync(file, 0o666);
  let reads = 0;
  t.equal(cachedFile("zeromq-0123.node", 5, () => (reads++, Buffer.from("addon")), 0o755, env), file);
  t.equal(reads, 1, "written again");
  t.equal(readFileSync(file, "utf8"), "addon");
  t.equal(statSync(file).mode & 0o022, 0, "no longer writable by others");
});

// ------------------------------------------------------------- the addon

/** The zeromq addon this Node loads from node_modules (asked of a child, so that this process loads only the copies under test). */
function zeromqAddonFile(): string {
  const script = `require("zeromq"); process.stdout.write(process.report.getReport().sharedObjects.find((s) => /zeromq.*\\.node$/.test(s)) ?? "")`;
  return execFileSync(process.execPath, ["-e", script], { cwd: ROOT, encoding: "utf8" });
}

t.test("addon - hashed from the file it is loaded from: a changed one is refused, a swap after the hash loads nothing else", { skip: posix ? false : "POSIX only" }, async (t) => {
  const source = zeromqAddonFile();
  t.ok(source, "zeromq's addon for this Node");
  const bytes = readFileSync(source);
  const entry = { sha256: createHash("sha256").update(bytes).digest("hex"), size: bytes.length };
  const name = `zeromq-${entry.sha256.slice(0, 16)}.node`;
  let reads = 0;
  const data = () => (reads++, new Uint8Array(bytes));
  const planted = Buffer.from(bytes);
  planted[0] = planted[0]! ^ 0xff;
  planted[planted.length - 1] = planted[planted.length - 1]! ^ 0xff;
  const plantedHash = createHash("sha256").update(planted).digest("hex");

  // First (glibc's dlopen hands back a library already loaded under the same
  // name without opening anything, so this must be the process's first load
  // of this addon): another file renamed into place after the hash, as a
  // writer of the directory would do. On Linux what is loaded is the inode
  // that was hashed, through /proc/self/fd; loaded by its name, it would be
  // the planted file (a damaged ELF header: dlopen fails).
  if (process.platform === "linux") {
    const raced = { NODEBIN_CACHE_DIR: join(tmp(t), "cache") };
    const cached = join(raced.NODEBIN_CACHE_DIR, name);
    const original = process.dlopen;
    let swapped = false;
    process.dlopen = ((module: { exports: unknown }, filename: string, flags?: number) => {
      const decoy = `${cached}.decoy`;
      writeFileSync(decoy, planted, { mode: 0o755 });
      renameSync(decoy, cached);
      swapped = true;
      return flags === undefined ? original.call(process, module, filename) : original.call(process, module, filename, flags);
    }) as typeof process.dlopen;
    try {
      const exports = loadCachedAddon("zeromq.node", entry, data, raced) as { Context?: unknown };
      t.ok(swapped, "the file was swapped between the hash and the load");
      t.equal(typeof exports.Context, "function", "and the verified addon was loaded all the same");
    } finally {
      process.dlopen = original;
    }
    t.same(readFileSync(cached), planted, "the name now holds the planted file, which was never loaded");
    reads = 0;
  }

  // A good cache: written once, verified, loaded.
  const good = { NODEBIN_CACHE_DIR: join(tmp(t), "cache") };
  const exports = loadCachedAddon("zeromq.node", entry, data, good) as { Context?: unknown };
  t.equal(typeof exports.Context, "function", "the addon is loaded");
  t.equal(reads, 1);
  t.equal(statSync(join(good.NODEBIN_CACHE_DIR, name)).mode & 0o777, 0o755);

  // A cached addon changed after it was written (same size, so the name-and-size check alone passes it).
  const tampered = { NODEBIN_CACHE_DIR: join(tmp(t), "cache") };
  mkdirSync(tampered.NODEBIN_CACHE_DIR, { mode: 0o700 });
  writeFileSync(join(tampered.NODEBIN_CACHE_DIR, name), planted, { mode: 0o755 });
  const err = refused(t, () => loadCachedAddon("zeromq.node", entry, data, tampered), "a changed cached addon");
  t.match(err.message, `refusing the native addon ${join(tampered.NODEBIN_CACHE_DIR, name)}: its sha256 is ${plantedHash}, not the ${entry.sha256} this executable carries`);
  t.match(err.message, /Remove it \(node-bin writes it again on the next start\)/);
  t.equal(reads, 1, "not rewritten: a human should look");
  t.same(readFileSync(join(tampered.NODEBIN_CACHE_DIR, name)), planted, "left as found");
});

t.test("executable - a world-writable cache directory and a changed cached addon stop every command", { skip: exeMissing }, async (t) => {
  const host = exeHost(t, []);
  const world = dirWithMode(join(host.root, "world"), 0o777);
  const ww = await runExe(host.exe, ["--version"], { ...host.env, NODEBIN_CACHE_DIR: world }, host.cwd);
  t.equal(ww.code, 9, "exit status 9 (FAILED_PRECONDITION)");
  t.match(ww.stderr, `error: FAILED_PRECONDITION: refusing the cache directory ${world} (NODEBIN_CACHE_DIR): it is writable by every user (mode 0777)`);
  t.same(readdirSync(world), [], "nothing extracted there");

  const first = await runExe(host.exe, ["--version"], host.env, host.cwd);
  t.equal(first.code, 0, first.stderr);
  const cache = host.env.NODEBIN_CACHE_DIR;
  const addon = readdirSync(cache).find((f) => /^zeromq-[0-9a-f]{16}\.node$/.test(f));
  t.ok(addon, "the addon is in the cache");
  const file = join(cache, addon!);
  const bytes = readFileSync(file);
  bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0xff;
  writeFileSync(file, bytes);
  const changed = await runExe(host.exe, ["--version"], host.env, host.cwd);
  t.equal(changed.code, 9);
  t.match(changed.stderr, new RegExp(`^error: FAILED_PRECONDITION: refusing the native addon ${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: its sha256 is [0-9a-f]{64}, not the [0-9a-f]{64} this executable carries`));
  t.notMatch(changed.stderr, /\n\s+at /, "no stack trace");
});

// ------------------------------------------------------------- install.sh

const SCRIPT = join(ROOT, "install.sh");
const TEST_USER = "nodebin-test-nouser";

/** A temporary root with a stand-in executable (answers --version), and install.sh run from it with a private HOME. */
function installHost(t: Test) {
  const root = tmp(t, "nodebin-install-");
  const exe = join(root, "fake-node-bin");
  writeFileSync(exe, "#!/bin/sh\necho 9.9.9\n", { mode: 0o755 });
  const home = join(root, "home");
  mkdirSync(home);
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home, LANG: "C.UTF-8" };
  const run = (args: string[]) => runCommand("bash", [SCRIPT, "--from", exe, ...args], env, { cwd: root });
  return { root, exe, prefix: join(root, "prefix"), units: join(root, "units"), run, entries: () => readdirSync(root).sort() };
}

t.test("install.sh - a bad value exits 64 naming its flag, before anything is written", async (t) => {
  const host = installHost(t);
  const before = host.entries();
  const sys = ["--prefix", host.prefix, "--systemd", "--systemd-dir", host.units];
  const cases: [string, string[]][] = [
    ["--seed", [...sys, "--seed", "10.0.0.5\nExecStartPre=/bin/sh -c id"]],
    ["--seed", [...sys, "--seed", "10.0.0.5 --config /etc/shadow"]],
    ["--seed", [...sys, "--seed", '10.0.0.5"']],
    ["--seed", [...sys, "--seed", "%h"]],
    ["--seed", [...sys, "--seed", "${HOME}"]],
    ["--seed", [...sys, "--seed", "10.0.0.5;id"]],
    ["--seed", [...sys, "--seed", "10.0.0.5:99999"]],
    ["--seed", [...sys, "--seed", "10.0.0.5,,10.0.0.6"]],
    ["--listen", [...sys, "--listen", "0.0.0.0\nUser=root"]],
    ["--listen", [...sys, "--listen", "300.1.1.1"]],
    ["--listen", [...sys, "--listen", "eth0"]],
    ["--prefix", ["--prefix", `${host.prefix}\nx`]],
    ["--prefix", ["--prefix", join(host.root, "with space"), "--systemd", "--systemd-dir", host.units]],
    ["--prefix", ["--prefix", join(host.root, "p%h"), "--systemd", "--systemd-dir", host.units]],
    ["--systemd-dir", ["--prefix", host.prefix, "--systemd", "--systemd-dir", `${host.units}\nx`]],
    ["--user", [...sys, "--user", "Bad User"]],
    ["--user", [...sys, "--user", isRoot ? "root" : TEST_USER]],
    ["--sha256", ["--prefix", host.prefix, "--sha256", "not-hex"]],
    ["--cluster-key", ["--prefix", host.prefix, "--cluster-key", join(host.root, "missing.key")]],
    ["--cluster-key", ["--prefix", host.prefix, "--cluster-key", host.exe]],
    ["--cluster-key", ["--prefix", host.prefix, "--cluster-key", `${host.exe}\nx`]],
  ];
  for (const [flag, args] of cases) {
    const r = await host.run(args);
    const label = `${flag} ${JSON.stringify(args[args.indexOf(flag) + 1])}`;
    t.equal(r.code, 64, label);
    t.match(r.stderr, new RegExp(`^install\\.sh: ${flag}\\b`), `${label}: the message names the flag`);
    t.equal(r.stdout, "", `${label}: nothing else said`);
    t.same(host.entries(), before, `${label}: nothing written`);
  }
});

t.test("install.sh - --cluster-key puts the key beside the executable, mode 0600, and --uninstall takes it away", async (t) => {
  const host = installHost(t);
  const key = join(host.root, "made.key");
  writeFileSync(key, keyFileText([newKeyLine()]), { mode: 0o644 }); // the copy is 0600 whatever the source's mode
  const r = await host.run(["--prefix", host.prefix, "--cluster-key", key]);
  t.equal(r.code, 0, r.stderr);
  const installed = join(host.prefix, "lib", "node-bin", "cluster.key");
  t.equal(readFileSync(installed, "utf8"), readFileSync(key, "utf8"), "the same key");
  if (posix) t.equal(statSync(installed).mode & 0o777, 0o600, "readable by its owner only");
  t.match(r.stdout, /cluster key: .*cluster\.key \(mode 0600\)/);
  const u = await host.run(["--uninstall", "--prefix", host.prefix]);
  t.equal(u.code, 0, u.stderr);
  t.notOk(existsSync(installed), "removed with the rest");
});

t.test("install.sh - the unit runs the governor as a dedicated user, sandboxed; no user is created outside /etc/systemd/system", async (t) => {
  const host = installHost(t);
  const passwd = existsSync("/etc/passwd") ? readFileSync("/etc/passwd", "utf8") : "";
  const user = isRoot ? ["--user", TEST_USER] : [];
  const r = await host.run(["--prefix", host.prefix, "--systemd", "--systemd-dir", host.units, "--seed", "10.0.0.5,node-a:7401,[::1]:7402", "--listen", "127.0.0.1", ...user]);
  t.equal(r.code, 0, r.stderr);
  t.equal(existsSync("/etc/passwd") ? readFileSync("/etc/passwd", "utf8") : "", passwd, "the system's users are untouched");
  const unit = readFileSync(join(host.units, "node-bin-governor.service"), "utf8");
  const lib = join(host.prefix, "lib", "node-bin");
  t.match(unit, `\nExecStart=${join(lib, "node-bin")} governor --components ${join(lib, "components")} --seed 10.0.0.5,node-a:7401,[::1]:7402 --listen 127.0.0.1\n`);
  const directives = unit.split("\n").filter((l) => /^[A-Z]\w*=/.test(l));
  const has = (line: string) => t.ok(directives.includes(line), line);
  for (const line of [
    "RuntimeDirectory=node-bin",
    "RuntimeDirectoryMode=0700",
    "CacheDirectory=node-bin",
    "CacheDirectoryMode=0700",
    "StateDirectory=node-bin",
    "Environment=NODEBIN_RUNTIME_DIR=%t/node-bin",
    "Environment=NODEBIN_CACHE_DIR=%C/node-bin",
    "KillMode=process",
    "NoNewPrivileges=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
  ]) {
    has(line);
  }
  if (isRoot) {
    has(`User=${TEST_USER}`);
    for (const line of [
      "CapabilityBoundingSet=",
      "ProtectSystem=strict",
      "ProtectHome=yes",
      "PrivateTmp=yes",
      "PrivateDevices=yes",
      "ProtectKernelTunables=yes",
      "ProtectKernelModules=yes",
      "ProtectControlGroups=yes",
    ]) {
      has(line);
    }
    t.notOk(directives.some((l) => l.startsWith("ReadWritePaths=")), "the components directory stays read-only to the service");
    t.match(r.stdout, `note: the unit runs as ${TEST_USER}, who does not exist here; install.sh creates the user only for a unit in /etc/systemd/system: useradd --system`);
    t.match(r.stdout, `then: sudo -u ${TEST_USER} env NODEBIN_RUNTIME_DIR=/run/node-bin NODEBIN_CACHE_DIR=/var/cache/node-bin `);
  } else {
    t.notOk(directives.some((l) => l.startsWith("User=")), "a user unit runs as its user");
  }

  const verify = which("systemd-analyze");
  await t.test("systemd-analyze verify", { skip: verify ? false : "no systemd-analyze on this machine" }, async (t) => {
    const v = await runCommand(verify!, [...(isRoot ? [] : ["--user"]), "verify", join(host.units, "node-bin-governor.service")], process.env);
    t.equal(v.code, 0, v.stderr);
    // verify warns about unknown or unparsable directives on stderr and still exits 0.
    t.same(v.stderr.split("\n").filter((l) => l.includes("node-bin-governor.service")), [], "no complaint about the unit");
  });

  if (isRoot) {
    const plain = await host.run(["--prefix", host.prefix, "--systemd", "--systemd-dir", host.units]);
    t.equal(plain.code, 0, plain.stderr);
    t.match(readFileSync(join(host.units, "node-bin-governor.service"), "utf8"), /^User=node-bin$/m, "node-bin by default");
  }
  const gone = await host.run(["--uninstall", "--prefix", host.prefix]);
  t.equal(gone.code, 0, gone.stderr);
  t.notOk(existsSync(host.units), "uninstall removes the unit");
});

import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { runDeploy } from "../../src/cli/deploy.ts";
import { COMPONENT_LOCK, hashComponent } from "../../src/governor/scan.ts";

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), "node-bin-deploy-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function write(dir: string, files: Record<string, string>): void {
  for (const [rel, text] of Object.entries(files)) {
    const file = join(dir, rel);
    mkdirSync(join(file, ".."), { recursive: true });
    writeFileSync(file, text);
  }
}

const COMPONENT = { "index.js": "export function Hello() {}\n", "hello.proto": 'syntax = "proto3";\n' };

/** Runs `node-bin deploy ARGV`, capturing what it writes. */
async function deploy(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const stdout = process.stdout.write;
  const stderr = process.stderr.write;
  process.stdout.write = ((chunk: string | Uint8Array) => ((out += String(chunk)), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => ((err += String(chunk)), true)) as typeof process.stderr.write;
  try {
    const code = await runDeploy(argv);
    return { code, out, err };
  } finally {
    process.stdout.write = stdout;
    process.stderr.write = stderr;
  }
}

/** Every entry below `dir` with its contents: what "nothing changed" compares. */
function snapshot(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  const walk = (abs: string, rel: string) => {
    for (const e of readdirSync(abs, { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        files[`${p}/`] = "";
        walk(join(abs, e.name), p);
      } else files[p] = readFileSync(join(abs, e.name), "utf8");
    }
  };
  walk(dir, "");
  return files;
}

t.test("deploy - a new component: copied under its base name, one line reported", async (t) => {
  const root = tmp(t);
  const src = join(root, "greeter");
  const components = join(root, "components");
  mkdirSync(components);
  write(src, { ...COMPONENT, "lib/util.js": "1", "node_modules/dep/index.js": "dep", ".env": "A=1" });
  const r = await deploy([src, "--components", components]);
  t.equal(r.code, 0, r.err);
  const hash = hashComponent(join(components, "greeter"));
  t.equal(hash.hash, hashComponent(src).hash, "the scanner's hash of the copy is the source's");
  t.equal(r.out, `deployed greeter (3 files, sha256 ${hash.hash.slice(0, 12)}) to ${components}\n`);
  t.equal(r.err, "");
  t.same(readdirSync(components), ["greeter"], "no temporary directory left");
  t.same(snapshot(join(components, "greeter")), snapshot(src), "everything is copied, node_modules and dot-files too");
});

t.test("deploy - over an existing component: new files replace the old, no lock or temporary directory is left", async (t) => {
  const root = tmp(t);
  const components = join(root, "components");
  const v1 = join(root, "v1");
  const v2 = join(root, "v2");
  write(v1, { ...COMPONENT, "old-only.js": "gone after v2" });
  write(v2, { ...COMPONENT, "index.js": "export function Hello() { return {} }\n", "new.js": "1" });
  mkdirSync(components);
  t.equal((await deploy([v1, "--components", components, "--name", "greeter"])).code, 0);
  const before = hashComponent(join(components, "greeter")).hash;

  const r = await deploy([v2, "--components", components, "--name", "greeter"]);
  t.equal(r.code, 0, r.err);
  const after = hashComponent(join(components, "greeter")).hash;
  t.not(after, before, "the hash changed");
  t.equal(after, hashComponent(v2).hash);
  t.match(r.out, new RegExp(`^deployed greeter \\(3 files, sha256 ${after.slice(0, 12)}\\) to `));
  t.same(readdirSync(components), ["greeter"], "no .greeter.deploy-* or .greeter.old-* left");
  t.notOk(existsSync(join(components, "greeter", COMPONENT_LOCK)), "the lock is gone");
  t.same(snapshot(join(components, "greeter")), snapshot(v2), "exactly the new files");

  // Deploying the same again is fine and changes nothing.
  t.equal((await deploy([v2, "--components", components, "--name", "greeter"])).code, 0);
  t.equal(hashComponent(join(components, "greeter")).hash, after);
});

t.test("deploy - symlinks are copied as links and hashed by their target, never followed; a symlinked SRC_DIR deploys the directory it names", async (t) => {
  const root = tmp(t);
  const components = join(root, "components");
  mkdirSync(components);
  const src = join(root, "greeter");
  write(src, COMPONENT);
  write(root, { "outside.txt": "secret one" });
  symlinkSync(join(root, "outside.txt"), join(src, "outside.txt")); // out of the component
  symlinkSync("index.js", join(src, "alias.js")); // inside it, relative
  symlinkSync("loop", join(src, "loop")); // a link to itself
  const r = await deploy([src, "--components", components]);
  t.equal(r.code, 0, r.err);
  const copy = join(components, "greeter");
  for (const name of ["outside.txt", "alias.js", "loop"]) {
    t.ok(lstatSync(join(copy, name)).isSymbolicLink(), `${name} is a link in the copy`);
    t.equal(readlinkSync(join(copy, name)), readlinkSync(join(src, name)), `${name}: its target as written`);
  }
  const hash = hashComponent(copy);
  t.equal(hash.hash, hashComponent(src).hash, "the copy hashes as its source");
  t.same({ files: hash.files, links: hash.links }, { files: 2, links: 3 });
  writeFileSync(join(root, "outside.txt"), "secret two");
  t.equal(hashComponent(copy).hash, hash.hash, "the file outside the component is no part of the hash");
  t.equal(hashComponent(src).hash, hash.hash);

  const viaLink = join(root, "linked-greeter");
  symlinkSync(src, viaLink);
  const linked = await deploy([viaLink, "--components", components]);
  t.equal(linked.code, 0, linked.err);
  const deployed = join(components, "linked-greeter");
  t.ok(lstatSync(deployed).isDirectory(), "named after the link, deployed as a directory, not as a copy of the link");
  t.equal(hashComponent(deployed).hash, hash.hash);
});

t.test("deploy - a lock held by someone else: refused, and the lock and files are left alone", async (t) => {
  const root = tmp(t);
  const components = join(root, "components");
  const src = join(root, "greeter");
  write(src, COMPONENT);
  write(join(components, "greeter"), { ...COMPONENT, [COMPONENT_LOCK]: "someone" });
  const before = snapshot(components);
  const r = await deploy([src, "--components", components]);
  t.equal(r.code, 9, "FAILED_PRECONDITION");
  t.match(r.err, /greeter is being deployed: .*\.deploying exists since .*remove it and retry/);
  t.same(snapshot(components), before);
});

t.test("deploy - a bad source: an error code, and nothing changed", async (t) => {
  const root = tmp(t);
  const components = join(root, "components");
  write(join(components, "greeter"), COMPONENT);
  write(join(root, "noproto"), { "index.js": "" });
  write(join(root, "noindex"), { "hello.proto": "" });
  write(join(root, "nested-proto"), { "package.json": "{}", "proto/hello.proto": "" });
  write(root, { "afile": "" });
  const before = snapshot(components);
  const cases: [string, number, RegExp][] = [
    [join(root, "missing"), 5, /NOT_FOUND: .*missing: no such component directory/],
    [join(root, "afile"), 3, /INVALID_ARGUMENT: .*afile: not a directory/],
    [join(root, "noproto"), 3, /INVALID_ARGUMENT: .*noproto: not a component: no \.proto file/],
    [join(root, "noindex"), 3, /INVALID_ARGUMENT: .*noindex: not a component: no handler module \(index\.ts, .*\) and no package\.json/],
  ];
  for (const [src, code, message] of cases) {
    const r = await deploy([src, "--components", components, "--name", "greeter"]);
    t.equal(r.code, code, src);
    t.match(r.err, message);
    t.equal(r.out, "");
    t.same(snapshot(components), before, "nothing changed");
  }
  const r = await deploy([join(root, "nested-proto"), "--components", components]);
  t.equal(r.code, 0, "a .proto in a subdirectory and a package.json are enough");

  const missing = await deploy([join(root, "nested-proto"), "--components", join(root, "nope")]);
  t.equal(missing.code, 5);
  t.match(missing.err, /components directory .*nope does not exist/);
});

t.test("deploy - usage errors exit 64: bad names, no source, unknown options", async (t) => {
  const root = tmp(t);
  const components = join(root, "components");
  mkdirSync(components);
  write(join(root, "greeter"), COMPONENT);
  write(join(root, ".hidden"), COMPONENT);
  const src = join(root, "greeter");
  for (const name of ["../evil", ".hidden", "a/b", "-x", "", "has space"]) {
    const r = await deploy([src, "--components", components, `--name=${name}`]);
    t.equal(r.code, 64, `--name ${JSON.stringify(name)}`);
    t.match(r.err, /error: (invalid component name|option `--name <name>` value is missing)/);
  }
  const hidden = await deploy([join(root, ".hidden"), "--components", components]);
  t.equal(hidden.code, 64, "an invalid base name");
  t.match(hidden.err, /invalid component name "\.hidden".*\(pass --name NAME\)/);
  t.equal((await deploy(["--components", components])).code, 64, "no SRC_DIR");
  t.equal((await deploy([src, src, "--components", components])).code, 64, "two SRC_DIRs");
  const unknown = await deploy([src, "--components", components, "--force"]);
  t.equal(unknown.code, 64);
  t.match(unknown.err, /Unknown option `--force`/);
  t.same(readdirSync(components), [], "nothing deployed");
});

t.test("deploy - --help says a running governor picks the change up", async (t) => {
  const saved = console.info;
  let text = "";
  console.info = (...args: unknown[]) => {
    text += args.join(" ");
  };
  try {
    t.equal(await runDeploy(["--help"]), 0);
  } finally {
    console.info = saved;
  }
  t.match(text, /governor picks the change up by itself/);
  t.match(text, /--components <dir>/);
  t.match(text, /--name <name>/);
});

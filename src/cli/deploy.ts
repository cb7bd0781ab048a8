/**
 * `node-bin deploy SRC_DIR`: copies a component directory into the components
 * directory so that a scanner (the governor's hot deploy) never sees it half
 * written:
 * - a new component is copied to `.NAME.deploy-<random>` (dot-prefixed, so
 *   scanners skip it) and renamed to NAME in one step;
 * - over an existing one, `NAME/.deploying` is taken first (the scanner keeps
 *   NAME's previous hash while it exists), the copy is made beside it, then
 *   NAME's entries are swapped for the new ones (the directory itself stays,
 *   so watchers on it stay valid) and the lock is removed last. The old
 *   entries, parked in `.NAME.old-<random>`, are removed after that.
 * A failure before the lock is removed puts the old entries back; the lock and
 * the temporary directories are always removed.
 */
import { cac } from "cac";
import { randomBytes } from "node:crypto";
import { closeSync, cpSync, lstatSync, mkdirSync, openSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeSync, type Dirent, type Stats } from "node:fs";
import { basename, join, resolve } from "node:path";
import { INDEX_FILES } from "../component/loader.ts";
import { COMPONENT_LOCK, hashComponent } from "../governor/scan.ts";
import { NodeBinError } from "../wire/errors.ts";
import { resolveComponentsDir } from "./components-dir.ts";
import { LOG_FORMAT_HELP, roleOutput } from "./log-options.ts";
import { checkFlags, reportError, UsageError } from "./output.ts";
import { VERSION } from "./version.ts";

export const COMPONENT_NAME = /^[A-Za-z0-9][\w.-]*$/;

const USAGE = "run `node-bin deploy --help` for usage";

export async function runDeploy(argv: string[]): Promise<number> {
  const cli = cac("node-bin deploy");
  cli
    .usage(
      "SRC_DIR [options]\n\n" +
        "  Copies the component in SRC_DIR into the components directory as NAME, safely:\n" +
        "  a new component appears in one rename; an existing one is locked (NAME/.deploying)\n" +
        "  while its files are swapped, so nothing ever sees it half written.\n" +
        "  A running governor picks the change up by itself: it rolls the component's\n" +
        "  nodes over to the new code one at a time, handing each one's state to its successor.",
    )
    .option("--components <dir>", "components directory (default: $NODEBIN_COMPONENTS, components/ beside node-bin, or ./components)")
    .option("--name <name>", "the component's directory name (default: the base name of SRC_DIR)")
    .option("--log-format <format>", LOG_FORMAT_HELP)
    .option("-v, --version", "print the version")
    .example("node-bin deploy ./greeter --components /srv/node-bin/components")
    .help();
  const output = roleOutput("deploy");
  let parsed;
  try {
    parsed = cli.parse(["node", "node-bin deploy", ...argv], { run: false });
    checkFlags(cli, argv);
  } catch (err) {
    return reportError(output, err, USAGE);
  }
  if (parsed.options.help) return 0;
  if (parsed.options.version) {
    output.out(VERSION);
    return 0;
  }
  const o = parsed.options as Record<string, unknown>;
  try {
    const args = parsed.args.map(String);
    if (args.length === 0) throw new UsageError("SRC_DIR is required: the component directory to deploy");
    if (args.length > 1) throw new UsageError(`one SRC_DIR at a time, got ${args.length}: ${args.join(" ")}`);
    const given = resolve(args[0]!);
    const name = o.name === undefined ? basename(given) : String(o.name);
    if (!COMPONENT_NAME.test(name)) {
      throw new UsageError(
        `invalid component name ${JSON.stringify(name)}: it must start with a letter or digit and hold only letters, digits, "_", "." and "-"${o.name === undefined ? " (pass --name NAME)" : ""}`,
      );
    }
    validateSource(given);
    // SRC_DIR given as a symlink is deployed as the directory it names: cpSync
    // would copy the link itself, which, read from the components directory,
    // points elsewhere or nowhere.
    const src = realpathSync(given);
    const dir = resolveComponentsDir(typeof o.components === "string" ? o.components : undefined);
    if (!isDirectory(dir)) throw new NodeBinError("NOT_FOUND", `components directory ${dir} does not exist`, { details: { file: dir } });
    const { hash, files } = deploy(src, dir, name);
    output.out(`deployed ${name} (${files} file${files === 1 ? "" : "s"}, sha256 ${hash.slice(0, 12)}) to ${dir}`);
    return 0;
  } catch (err) {
    return reportError(output, err, USAGE);
  }
}

/** Throws NOT_FOUND or INVALID_ARGUMENT unless `src` is a directory with an index module (or package.json) and a .proto file. */
function validateSource(src: string): void {
  let st: Stats;
  try {
    st = statSync(src);
  } catch (err) {
    throw new NodeBinError("NOT_FOUND", `${src}: no such component directory`, { details: { file: src }, cause: err });
  }
  if (!st.isDirectory()) throw new NodeBinError("INVALID_ARGUMENT", `${src}: not a directory`, { details: { file: src } });
  const entries = readdirSync(src);
  if (!entries.some((f) => INDEX_FILES.includes(f) || f === "package.json")) {
    throw new NodeBinError("INVALID_ARGUMENT", `${src}: not a component: no handler module (${INDEX_FILES.join(", ")}) and no package.json`, { details: { file: src } });
  }
  if (!hasProto(src)) {
    throw new NodeBinError("INVALID_ARGUMENT", `${src}: not a component: no .proto file (a component declares its messages and service in one)`, { details: { file: src } });
  }
}

/** A .proto file anywhere below `dir`, outside node_modules and dot-directories. */
function hasProto(dir: string, seen = new Set<string>()): boolean {
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return false;
  }
  for (const e of entries) if (e.name.endsWith(".proto") && !e.isDirectory()) return true;
  for (const e of entries) {
    if (!e.isDirectory() || e.name.startsWith(".") || e.name === "node_modules") continue;
    const sub = join(dir, e.name);
    if (seen.has(sub)) continue;
    seen.add(sub);
    if (hasProto(sub, seen)) return true;
  }
  return false;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

const suffix = () => randomBytes(6).toString("hex");

/** Copies `src` to `dir/name` (see the file comment). Returns the content hash the scanner will compute. */
function deploy(src: string, dir: string, name: string): { hash: string; files: number } {
  const target = join(dir, name);
  const temp = join(dir, `.${name}.deploy-${suffix()}`);
  let replacing = false;
  if (exists(target)) {
    const st = lstatSync(target);
    if (st.isSymbolicLink()) {
      throw new NodeBinError("FAILED_PRECONDITION", `${target} is a symbolic link: deploying over it would overwrite where it points; remove the link first`, { details: { file: target } });
    }
    if (!st.isDirectory()) throw new NodeBinError("FAILED_PRECONDITION", `${target} exists and is not a directory`, { details: { file: target } });
    replacing = true;
  }
  const lock = join(target, COMPONENT_LOCK);
  let locked = false;
  let old: string | undefined;
  try {
    if (replacing) {
      takeLock(lock, name);
      locked = true;
    }
    // Symbolic links inside the component are copied as links, their targets
    // as written, never followed: the copy neither reads nor carries what a
    // link reaches (outside the component, say), and it hashes as its
    // source, since hashComponent takes a link by its target too.
    cpSync(src, temp, {
      recursive: true,
      dereference: false,
      verbatimSymlinks: true,
      // The source's own lock file (say, a deploy from a components directory) is not content.
      filter: (from) => !(basename(from) === COMPONENT_LOCK && resolve(from, "..") === src),
    });
    const result = hashComponent(temp);
    if (!replacing) {
      try {
        renameSync(temp, target);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOTEMPTY" || code === "EEXIST" || code === "ENOTDIR") {
          throw new NodeBinError("ALREADY_EXISTS", `${target} appeared while it was being deployed (another deploy?); nothing was changed`, { details: { file: target }, cause: err });
        }
        throw err;
      }
      return result;
    }
    old = join(dir, `.${name}.old-${suffix()}`);
    mkdirSync(old);
    try {
      swapEntries(target, temp, old);
    } catch (err) {
      if (err instanceof NodeBinError && err.code === "DATA_LOSS") {
        const kept = old;
        old = undefined; // what could not be put back stays there
        throw new NodeBinError("DATA_LOSS", `${err.message}; the old files are kept in ${kept}`, { details: { ...err.details, kept }, cause: err });
      }
      throw err;
    }
    return result;
  } finally {
    // The lock goes last: once it is gone the scanner sees the complete new files.
    if (locked) rmSync(lock, { force: true });
    rmSync(temp, { recursive: true, force: true });
    if (old) rmSync(old, { recursive: true, force: true });
  }
}

/** Creates the lock file exclusively. Throws FAILED_PRECONDITION when it exists (another deploy, or a stale lock). */
function takeLock(lock: string, name: string): void {
  let fd: number;
  try {
    fd = openSync(lock, "wx");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") {
      let since = "";
      try {
        since = ` since ${statSync(lock).mtime.toISOString()}`;
      } catch {
        // gone meanwhile
      }
      throw new NodeBinError("FAILED_PRECONDITION", `${name} is being deployed: ${lock} exists${since}; if no deploy is running, remove it and retry`, {
        details: { file: lock },
        cause: err,
      });
    }
    throw err;
  }
  try {
    writeSync(fd, `node-bin deploy, pid ${process.pid}, ${new Date().toISOString()}\n`);
  } finally {
    closeSync(fd);
  }
}

/**
 * Moves every entry of `target` (but its lock) into `old`, then every entry of
 * `incoming` into `target`. On failure, moves them back and rethrows: `target`
 * holds its old files again.
 */
function swapEntries(target: string, incoming: string, old: string): void {
  const parked: string[] = [];
  const placed: string[] = [];
  try {
    for (const entry of readdirSync(target)) {
      if (entry === COMPONENT_LOCK) continue;
      renameSync(join(target, entry), join(old, entry));
      parked.push(entry);
    }
    for (const entry of readdirSync(incoming)) {
      renameSync(join(incoming, entry), join(target, entry));
      placed.push(entry);
    }
  } catch (err) {
    const problems: string[] = [];
    for (const entry of placed.reverse()) {
      try {
        renameSync(join(target, entry), join(incoming, entry));
      } catch (e) {
        problems.push(`${entry}: ${(e as Error).message}`);
      }
    }
    for (const entry of parked.reverse()) {
      try {
        renameSync(join(old, entry), join(target, entry));
      } catch (e) {
        problems.push(`${entry}: ${(e as Error).message}`);
      }
    }
    if (problems.length) {
      throw new NodeBinError("DATA_LOSS", `${target}: swapping the files failed (${(err as Error).message}) and so did putting the old ones back: ${problems.join("; ")}`, {
        details: { file: target },
        cause: err,
      });
    }
    throw err;
  }
}

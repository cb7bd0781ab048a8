/**
 * Sharing component code between hosts: a host asked to run a component
 * whose code it does not have fetches it from a host that has it (issue 14,
 * capacity spilling across hosts).
 *
 * - The code is content-addressed: a request names a component and its
 *   content hash (scan.ts hashComponent), and what is installed must hash to
 *   it, checked by hashComponent itself over the unpacked directory.
 * - It travels only sealed (seal.ts) with the cluster key, bound to
 *   "code <name> <hash>": without a cluster key nothing is served and nothing
 *   is fetched (a host's own state key is no secret another host shares, and
 *   code is never sent unsealed).
 * - Every archive that comes is hostile until it hashed right: bounded in
 *   bytes, files and path lengths; no absolute path, no "." or ".." segment,
 *   no name the hash leaves out (dot files, node_modules: they would be
 *   installed unverified), no path below a file or link, no link that leads
 *   out of the component (lexically, and never through another link).
 * - A fetched version lives in `<dir>/<name>@<hash>/<name>` (dir: the
 *   governor's `fetched/`), a components directory holding just it, which
 *   its children are started with; at most KEEP_VERSIONS versions per name
 *   are kept, never one a live child runs.
 *
 * Packing walks a component as hashComponent does (links by their target,
 * never followed; files opened without following a link put in their place),
 * and the archive's own hash is computed by the same rules (archiveHash), so
 * a server never sends code other than what was asked for.
 */
import { createHash, randomBytes } from "node:crypto";
import { closeSync, constants as fsConstants, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync, type Dirent } from "node:fs";
import { join, resolve } from "node:path";
import type { Logger } from "../component/context.ts";
import type { Keyring } from "../security/keys.ts";
import { open, seal } from "../security/seal.ts";
import { FETCH_COMPONENT, type FetchComponentReply, type FetchComponentRequest } from "../wire/control.ts";
import { nodebinRoot } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { decodeMessage, encodeMessage } from "../wire/message.ts";
import type { CodeFetch, ControlCall } from "./ports.ts";
import { hashComponent } from "./scan.ts";

const MiB = 1024 * 1024;
/** Most bytes of file contents one component may ship. */
export const MAX_CODE_BYTES = 12 * MiB;
/** Most bytes of one encoded archive (contents, paths, links): below the transport's 16 MiB frame bound with the seal and envelope. */
export const MAX_ARCHIVE_BYTES = 14 * MiB;
/** Most files and links of one component. */
export const MAX_ENTRIES = 4096;
/** Longest relative path and link target (bytes), and longest path segment. */
export const MAX_PATH_BYTES = 1024;
export const MAX_SEGMENT_BYTES = 255;
/** Versions of one component kept in the fetched directory (the newest). */
export const KEEP_VERSIONS = 2;
/** How long one source has to answer. */
export const FETCH_TIMEOUT_MS = 10_000;
/** Sources tried per fetch, at most (the list comes from gossip). */
export const MAX_SOURCES = 8;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const HASH = /^[0-9a-f]{64}$/;
const SEAL_OVERHEAD = 4 + 8 + 12 + 16;

const ArchiveType = nodebinRoot.lookupType("nodebin.ComponentArchive");

/** One file or link of a component (nodebin.ArchiveEntry). */
export interface ArchiveEntry {
  path: string;
  data: Uint8Array;
  mode: number;
  /** A link's target as written; "" for a regular file. */
  link: string;
}

/** A component directory packed (nodebin.ComponentArchive). */
export interface ComponentArchive {
  name: string;
  hash: string;
  entries: ArchiveEntry[];
}

/** What a seal of component code is bound to: it opens as this component at this hash only. */
export function codeContext(name: string, hash: string): string {
  return `code ${name} ${hash}`;
}

/** Throws INVALID_ARGUMENT unless `name` is a plain component name and `hash` a sha256 hex digest. */
export function checkNameAndHash(name: string, hash: string): void {
  if (!NAME.test(name) || name.endsWith(".")) throw new NodeBinError("INVALID_ARGUMENT", `${JSON.stringify(name.slice(0, 200))} is not a component name`, { details: { field: "name" } });
  if (!HASH.test(hash)) throw new NodeBinError("INVALID_ARGUMENT", `${JSON.stringify(hash.slice(0, 200))} is not a content hash (sha256, hex)`, { details: { field: "hash" } });
}

// ------------------------------------------------------------------ packing

// As scan.ts: names that are never content.
function ignored(name: string): boolean {
  return name.startsWith(".") || name === "node_modules";
}

const OPEN_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0);

function tooLarge(what: string, limit: number, details: Record<string, string> = {}): NodeBinError {
  return new NodeBinError("RESOURCE_EXHAUSTED", `${what}: more than ${limit}`, { details: { limit: String(limit), ...details } });
}

/**
 * Packs the component in `dir` as `name`: its files and links by the rules
 * of hashComponent, sorted as it sorts them, its hash computed over exactly
 * what was packed. Throws RESOURCE_EXHAUSTED past the bounds (checked before
 * a file is read), NOT_FOUND when `dir` cannot be read.
 */
export function packComponent(dir: string, name: string): ComponentArchive {
  const root = resolve(dir);
  const found: { rel: string; abs: string; link?: string }[] = [];
  const visited = new Set<string>();
  const walk = (abs: string, rel: string, top: boolean): void => {
    let list: Dirent[];
    try {
      const st = statSync(abs);
      const id = `${st.dev}:${st.ino}`;
      if (visited.has(id)) return;
      visited.add(id);
      list = readdirSync(abs, { withFileTypes: true });
    } catch (err) {
      if (top) throw new NodeBinError("NOT_FOUND", `component ${name}: ${root} cannot be read (${(err as NodeJS.ErrnoException).code ?? err})`, { details: { component: name }, cause: err });
      return; // gone meanwhile: its contents are not in the hash either
    }
    for (const entry of list) {
      if (ignored(entry.name)) continue;
      const childAbs = join(abs, entry.name);
      const childRel = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isFile()) found.push({ rel: childRel, abs: childAbs });
      else if (entry.isDirectory()) walk(childAbs, childRel, false);
      else if (entry.isSymbolicLink()) {
        try {
          found.push({ rel: childRel, abs: childAbs, link: readlinkSync(childAbs) });
        } catch {
          // removed or replaced meanwhile
        }
      }
      if (found.length > MAX_ENTRIES) throw tooLarge(`component ${name} has too many files`, MAX_ENTRIES, { component: name });
    }
  };
  walk(root, "", true);
  found.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  const entries: ArchiveEntry[] = [];
  let bytes = 0;
  for (const f of found) {
    if (Buffer.byteLength(f.rel) > MAX_PATH_BYTES) throw tooLarge(`component ${name}: path ${f.rel.slice(0, 100)}... is too long`, MAX_PATH_BYTES, { component: name });
    if (f.link !== undefined) {
      entries.push({ path: f.rel, data: new Uint8Array(0), mode: 0, link: f.link });
      continue;
    }
    const file = readBounded(f.abs, MAX_CODE_BYTES - bytes, name);
    if (!file) continue;
    bytes += file.data.length;
    entries.push({ path: f.rel, data: file.data, mode: file.mode & 0o777, link: "" });
  }
  return { name, hash: archiveHash(entries), entries };
}

/** A regular file's contents and mode, if it is (still) one, read only if it fits in `room` bytes. */
function readBounded(file: string, room: number, name: string): { data: Uint8Array; mode: number } | undefined {
  let fd: number;
  try {
    fd = openSync(file, OPEN_FLAGS);
  } catch {
    return undefined; // gone, a link now, a fifo: not content (as hashComponent)
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return undefined;
    if (st.size > room) throw tooLarge(`component ${name} has more bytes of code`, MAX_CODE_BYTES, { component: name });
    const data = readFileSync(fd);
    if (data.length > room) throw tooLarge(`component ${name} has more bytes of code`, MAX_CODE_BYTES, { component: name });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), mode: st.mode };
  } finally {
    closeSync(fd);
  }
}

/** The content hash of an archive's entries, by hashComponent's rules (so it equals the hash of the directory they unpack to). */
export function archiveHash(entries: readonly ArchiveEntry[]): string {
  const hash = createHash("sha256");
  for (const e of entries) {
    hash.update(e.path);
    if (e.link) {
      const target = Buffer.from(e.link);
      hash.update("\0symlink\0");
      hash.update(String(target.length));
      hash.update("\0");
      hash.update(target);
    } else {
      hash.update("\0");
      hash.update(String(e.data.length));
      hash.update("\0");
      hash.update(e.data);
    }
  }
  return hash.digest("hex");
}

// ------------------------------------------------------------ sealing

/** Encodes and seals an archive with the cluster keyring's current key. Throws RESOURCE_EXHAUSTED past MAX_ARCHIVE_BYTES. */
export function sealArchive(ring: Keyring, archive: ComponentArchive): Uint8Array {
  const bytes = encodeMessage(ArchiveType, archive, `archive of ${archive.name}`);
  if (bytes.length > MAX_ARCHIVE_BYTES) throw tooLarge(`component ${archive.name}: its archive has more bytes`, MAX_ARCHIVE_BYTES, { component: archive.name });
  return seal(ring, bytes, codeContext(archive.name, archive.hash));
}

/**
 * Opens what a source sent for `name` at `hash` and checks it: bounded
 * (RESOURCE_EXHAUSTED), sealed with a key of the ring for exactly this
 * component and hash (UNAUTHENTICATED), an archive of it (INVALID_ARGUMENT),
 * whose entries are safe to write (checkEntries: INVALID_ARGUMENT) and hash
 * to `hash` (DATA_LOSS). Nothing is written.
 */
export function openArchive(ring: Keyring, sealed: Uint8Array, name: string, hash: string): ComponentArchive {
  if (sealed.length > MAX_ARCHIVE_BYTES + SEAL_OVERHEAD) throw tooLarge(`component ${name}: the sealed archive has ${sealed.length} bytes`, MAX_ARCHIVE_BYTES, { component: name });
  const plain = open(ring, sealed, codeContext(name, hash));
  const message = decodeMessage(ArchiveType, plain, `archive of ${name}`);
  const archive = ArchiveType.toObject(message, { longs: Number, arrays: true, defaults: true }) as ComponentArchive;
  if (archive.name !== name || archive.hash !== hash) {
    throw new NodeBinError("INVALID_ARGUMENT", `the archive is of ${archive.name.slice(0, 100)} at ${archive.hash.slice(0, 64)}, not of ${name} at ${hash}`, { details: { component: name } });
  }
  checkEntries(name, archive.entries);
  const got = archiveHash(archive.entries);
  if (got !== hash) throw new NodeBinError("DATA_LOSS", `the code of ${name} that came hashes to ${got}, not ${hash}: refused`, { details: { component: name, hash, got } });
  return archive;
}

/**
 * Throws INVALID_ARGUMENT (RESOURCE_EXHAUSTED for the bounds) unless every
 * entry can be written under a fresh directory without reaching out of it
 * and every byte written is covered by the hash: paths relative, sorted and
 * unique, within the length bounds, of segments that are neither empty, ".",
 * "..", names the hash skips (dot files, node_modules), nor carry a NUL or a
 * backslash; no path below a file or link; link targets relative, resolving
 * (lexically, never through another link of the archive) inside.
 */
export function checkEntries(name: string, entries: readonly ArchiveEntry[]): void {
  if (entries.length > MAX_ENTRIES) throw tooLarge(`component ${name}: the archive has too many entries (${entries.length})`, MAX_ENTRIES, { component: name });
  const bad = (path: string, why: string) => new NodeBinError("INVALID_ARGUMENT", `archive of ${name}: ${JSON.stringify(path.slice(0, 200))} refused: ${why}`, { details: { component: name, path: path.slice(0, 200) } });
  let bytes = 0;
  let previous: string | undefined;
  const leaves = new Set<string>();
  const links = new Set<string>();
  for (const e of entries) {
    const { path } = e;
    if (Buffer.byteLength(path) > MAX_PATH_BYTES) throw tooLarge(`component ${name}: an archive path is too long`, MAX_PATH_BYTES, { component: name });
    if (previous !== undefined && !(previous < path)) throw bad(path, "entries out of order or repeated");
    previous = path;
    checkSegments(path, bad);
    bytes += e.data.length;
    if (bytes > MAX_CODE_BYTES) throw tooLarge(`component ${name}: the archive has more bytes of code`, MAX_CODE_BYTES, { component: name });
    if (e.link && e.data.length) throw bad(path, "a link with contents");
    leaves.add(path);
    if (e.link) links.add(path);
  }
  for (const e of entries) {
    const segments = e.path.split("/");
    for (let i = 1; i < segments.length; i++) {
      if (leaves.has(segments.slice(0, i).join("/"))) throw bad(e.path, "below a file or a link");
    }
    if (e.link) checkLink(e.path, e.link, links, bad);
  }
}

function checkSegments(path: string, bad: (path: string, why: string) => NodeBinError): void {
  if (!path) throw bad(path, "an empty path");
  if (path.startsWith("/") || /^[A-Za-z]:/.test(path)) throw bad(path, "an absolute path");
  if (path.includes("\\") || path.includes("\0")) throw bad(path, "a backslash or NUL in a path");
  for (const s of path.split("/")) {
    if (s === "" || s === "." || s === "..") throw bad(path, `a "${s}" segment`);
    if (ignored(s)) throw bad(path, "a name that is not content (dot files, node_modules are left out of the hash)");
    if (Buffer.byteLength(s) > MAX_SEGMENT_BYTES) throw bad(path, "a path segment too long");
  }
}

/**
 * A link stays inside when its target, resolved segment by segment from the
 * link's directory, never climbs above the component and never passes
 * through another link (whose own target could be "." or "..", making the
 * lexical reading wrong); only its last segment may be a link (checked in
 * turn, so every chain stays inside).
 */
function checkLink(path: string, target: string, links: ReadonlySet<string>, bad: (path: string, why: string) => NodeBinError): void {
  if (Buffer.byteLength(target) > MAX_PATH_BYTES) throw bad(path, "a link target too long");
  if (target.startsWith("/") || /^[A-Za-z]:/.test(target) || target.includes("\\") || target.includes("\0")) throw bad(path, `a link to ${JSON.stringify(target.slice(0, 200))}, outside the component`);
  const at = path.split("/").slice(0, -1);
  const steps = target.split("/").filter((s) => s !== "" && s !== ".");
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i]!;
    if (s === "..") {
      if (!at.length) throw bad(path, `a link to ${JSON.stringify(target.slice(0, 200))}, outside the component`);
      at.pop();
      continue;
    }
    at.push(s);
    if (i < steps.length - 1 && links.has(at.join("/"))) throw bad(path, `a link through another link (${at.join("/")})`);
  }
}

/**
 * Writes a checked archive's entries into `dir` (made, mode 0700; it must
 * not exist): directories 0700, files 0600 (0700 when their owner could
 * execute them), links as links. Files are created exclusively and never
 * through a link.
 */
export function unpackArchive(archive: ComponentArchive, dir: string): void {
  checkEntries(archive.name, archive.entries);
  mkdirSync(dir, { mode: 0o700 });
  const made = new Set<string>([""]);
  for (const e of archive.entries) {
    const segments = e.path.split("/");
    for (let i = 1; i < segments.length; i++) {
      const sub = segments.slice(0, i).join("/");
      if (made.has(sub)) continue;
      mkdirSync(join(dir, ...segments.slice(0, i)), { mode: 0o700 });
      made.add(sub);
    }
    const file = join(dir, ...segments);
    if (e.link) {
      symlinkSync(e.link, file);
      continue;
    }
    const fd = openSync(file, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | (fsConstants.O_NOFOLLOW ?? 0), e.mode & 0o100 ? 0o700 : 0o600);
    try {
      for (let off = 0; off < e.data.length; ) off += writeSync(fd, e.data, off, e.data.length - off);
    } finally {
      closeSync(fd);
    }
  }
}

// --------------------------------------------------------------- the share

/** What CodeShare needs of the governor. */
export interface CodeShareOptions {
  /** The fetched versions' directory (the governor's `<stateDir>/fetched`). */
  dir: string;
  /** The cluster keyring, or undefined when the process has none (then nothing is served or fetched). */
  keyring(): Keyring | undefined;
  /** A control call to `via` (the governor process's callControl). */
  call: ControlCall;
  /** The directory of component `name` this governor runs at `hash` (its own, or fetched), or undefined. Throws UNAVAILABLE while it is being deployed. */
  source(name: string, hash: string): string | undefined;
  /** Makes the governor know a fetched component: `root` is a components directory holding only it; `from`: the host it came from. */
  install(name: string, hash: string, root: string, from: string): void;
  /** The hashes of `name` live children run now (their code is never pruned). */
  inUse(name: string): ReadonlySet<string>;
  log: Logger;
  timeoutMs?: number;
}

/**
 * The governor's code sharing: it serves FetchComponent (serve) and fetches
 * what its host lacks (fetch: the CodeFetch the elastic loop is given).
 */
export class CodeShare implements CodeFetch {
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(private readonly o: CodeShareOptions) {}

  /**
   * nodebin.Control/FetchComponent: the component's code at that hash,
   * packed and sealed. Throws FAILED_PRECONDITION without a cluster key,
   * INVALID_ARGUMENT for a malformed name or hash, NOT_FOUND for a component
   * this governor does not run at that hash (or whose files changed from it),
   * RESOURCE_EXHAUSTED past the bounds.
   */
  serve(request: FetchComponentRequest): FetchComponentReply {
    const ring = this.o.keyring();
    if (!ring) throw new NodeBinError("FAILED_PRECONDITION", "code is shared only with a cluster key");
    checkNameAndHash(request.name, request.hash);
    const { name, hash } = request;
    const dir = this.o.source(name, hash);
    const missing = () => new NodeBinError("NOT_FOUND", `no component ${name} at ${hash.slice(0, 12)} here`, { details: { component: name, hash } });
    if (!dir) throw missing();
    const archive = packComponent(dir, name);
    // The files changed since the last scan: what is here now is not what was asked for.
    if (archive.hash !== hash) throw missing();
    this.o.log.info(`sending the code of ${name} (${hash.slice(0, 12)}, ${archive.entries.length} files)`);
    return { sealed: sealArchive(ring, archive) };
  }

  fetch(name: string, hash: string, sources: readonly { host: string; endpoint: string }[]): Promise<void> {
    const key = `${name}@${hash}`;
    const running = this.inFlight.get(key);
    if (running) return running;
    const p = this.doFetch(name, hash, sources).finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, p);
    return p;
  }

  private async doFetch(name: string, hash: string, sources: readonly { host: string; endpoint: string }[]): Promise<void> {
    const ring = this.o.keyring();
    if (!ring) throw new NodeBinError("FAILED_PRECONDITION", `cannot fetch the code of ${name}: code is shared only with a cluster key`, { details: { component: name } });
    checkNameAndHash(name, hash);
    const root = join(this.o.dir, `${name}@${hash}`);
    const kept = this.verified(root, name, hash);
    if (kept !== undefined) {
      this.o.install(name, hash, root, kept);
      return;
    }
    const failures: { host: string; error: NodeBinError }[] = [];
    for (const source of sources.slice(0, MAX_SOURCES)) {
      try {
        const reply = await this.o.call(FETCH_COMPONENT, { name, hash }, source.endpoint, this.o.timeoutMs ?? FETCH_TIMEOUT_MS);
        const archive = openArchive(ring, reply.sealed, name, hash);
        this.place(archive, root, source.host);
        this.o.log.info(`fetched the code of ${name} (${hash.slice(0, 12)}, ${archive.entries.length} files) from ${source.host}`);
        this.o.install(name, hash, root, source.host);
        this.prune(name);
        return;
      } catch (err) {
        const error = NodeBinError.from(err);
        failures.push({ host: source.host, error });
        this.o.log.warn(`fetching the code of ${name} (${hash.slice(0, 12)}) from ${source.host} (${source.endpoint}) failed: ${error.code}: ${error.message}`);
      }
    }
    throw fetchFailed(name, hash, failures);
  }

  /**
   * Makes the governor know a version fetched before (by a previous governor
   * of this host, whose children it adopted), if it is still here and still
   * hashes right. False when it is not.
   */
  restore(name: string, hash: string): boolean {
    try {
      checkNameAndHash(name, hash);
    } catch {
      return false;
    }
    const root = join(this.o.dir, `${name}@${hash}`);
    const from = this.verified(root, name, hash);
    if (from === undefined) return false;
    this.o.install(name, hash, root, from);
    return true;
  }

  /** The host a verified copy at `root` came from, or undefined (none, or not verified: then it is removed). */
  private verified(root: string, name: string, hash: string): string | undefined {
    if (!existsSync(root)) return undefined;
    try {
      if (hashComponent(join(root, name)).hash === hash) {
        let from = "";
        try {
          from = readFileSync(join(root, ".from"), "utf8").slice(0, 256);
        } catch {
          // no record of where it came from
        }
        return from || "an earlier fetch";
      }
    } catch {
      // unreadable: fetched again
    }
    this.o.log.warn(`the fetched code in ${root} does not hash to ${hash}: removed`);
    rmSync(root, { recursive: true, force: true });
    return undefined;
  }

  /** Unpacks into a temporary directory, verifies it with hashComponent, and renames it to `root`. Throws DATA_LOSS when it does not hash. */
  private place(archive: ComponentArchive, root: string, from: string): void {
    mkdirSync(this.o.dir, { recursive: true, mode: 0o700 });
    const tmp = `${root}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
    try {
      mkdirSync(tmp, { mode: 0o700 });
      unpackArchive(archive, join(tmp, archive.name));
      const got = hashComponent(join(tmp, archive.name)).hash;
      if (got !== archive.hash) throw new NodeBinError("DATA_LOSS", `the code of ${archive.name} unpacked hashes to ${got}, not ${archive.hash}: removed`, { details: { component: archive.name, hash: archive.hash, got } });
      writeFileSync(join(tmp, ".from"), from, { mode: 0o600 });
      if (existsSync(root)) {
        // Another fetch (a previous governor) placed it meanwhile: keep that one if it verifies.
        if (this.verified(root, archive.name, archive.hash) !== undefined) return;
      }
      renameSync(tmp, root);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  /** Keeps the KEEP_VERSIONS newest fetched versions of `name`, and every version a live child runs. */
  private prune(name: string): void {
    let versions: { dir: string; hash: string; mtime: number }[];
    try {
      versions = readdirSync(this.o.dir)
        .filter((d) => d.startsWith(`${name}@`) && !d.includes(".tmp-"))
        .map((d) => ({ dir: join(this.o.dir, d), hash: d.slice(name.length + 1), mtime: statSync(join(this.o.dir, d)).mtimeMs }));
    } catch {
      return;
    }
    const used = this.o.inUse(name);
    versions.sort((a, b) => b.mtime - a.mtime);
    for (const v of versions.slice(KEEP_VERSIONS)) {
      if (used.has(v.hash)) continue;
      rmSync(v.dir, { recursive: true, force: true });
      this.o.log.info(`removed the fetched code of ${name} at ${v.hash.slice(0, 12)} (${KEEP_VERSIONS} newer kept)`);
    }
  }
}

/**
 * The error of a fetch no source served: the most telling of theirs (code
 * that came and failed its checks, then a source that did not answer, then
 * NOT_FOUND), with each source's code in the details.
 */
function fetchFailed(name: string, hash: string, failures: readonly { host: string; error: NodeBinError }[]): NodeBinError {
  const details: Record<string, string> = { component: name, hash };
  for (const f of failures) details[`source ${f.host}`] = f.error.code;
  if (!failures.length) return new NodeBinError("NOT_FOUND", `no host is known to have the code of ${name} at ${hash.slice(0, 12)}`, { details });
  const order = ["DATA_LOSS", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "DEADLINE_EXCEEDED", "UNAVAILABLE"];
  const rank = (e: NodeBinError) => (order.includes(e.code) ? order.indexOf(e.code) : order.length);
  const worst = [...failures].sort((a, b) => rank(a.error) - rank(b.error))[0]!;
  const code = worst.error.code;
  return new NodeBinError(code, `the code of ${name} at ${hash.slice(0, 12)} could not be fetched from ${failures.map((f) => `${f.host} (${f.error.code})`).join(", ")}: ${worst.error.message}`, { details, cause: worst.error });
}

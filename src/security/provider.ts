/**
 * The built-in security provider: CurveZMQ on every tcp socket with keys
 * derived from the cluster key, a ZAP decision that admits only connections
 * proving a key of the ring, and the seal for state payloads. Every role
 * (governor, container, dev, client) builds one at start (loadSecurity) and
 * hands it to its process (compose.ts), before anything binds or connects:
 * the security provider is the first step of the start-up order.
 *
 * What it protects and what it does not: the cluster key is the root of
 * trust. A process that holds it is a member and may do what members do; one
 * that does not can neither join (its gossip and registrations never reach a
 * handler: its connection is refused in the handshake) nor call, nor read a
 * call (CurveZMQ encrypts, with forward secrecy per connection). ipc sockets
 * carry no CurveZMQ: they live in the private runtime directory (mode 0700),
 * which is the host's own boundary.
 *
 * Without a key there is no network security: the process binds loopback
 * only unless told --insecure (cli/net-options.ts), and state payloads are
 * sealed with a key of the host's own, kept in its runtime directory (state
 * moves only between processes of one host without a cluster key).
 *
 * The key file is read again when it changes (polled every 2 s): accepted
 * keys take effect for the next connection, the current key for the next
 * connection made and the next seal. A listener keeps the server key it bound
 * with until its process restarts (libzmq copies it at bind), which is why a
 * client falls back through the ring when a handshake fails (rotation, README).
 */
import { readFileSync, statSync, unwatchFile, watchFile } from "node:fs";
import { join } from "node:path";
import { createOnce } from "../transport/runtime-dir.ts";
import type { ConnectSecurity, WireSecurity, ZapVerdict } from "../transport/zmq.ts";
import { NodeBinError } from "../wire/errors.ts";
import { newKeyLine, keyFileText, parseKeyring, type Keyring } from "./keys.ts";

export interface SecurityProvider {
  /** "curve" (a cluster key) or "none". */
  readonly name: string;
  /** The cluster keyring, when there is one (its latest reading). */
  readonly keyring: Keyring | undefined;
  /** The keys that seal state: the cluster keyring, else the host's own key. */
  readonly sealRing: Keyring;
  /** What the transport applies to tcp sockets (undefined: none). */
  readonly wire: WireSecurity | undefined;
  /** One line for the start-up log and status: which key, from where. */
  describe(): string;
  /** Stops watching the key file. */
  close(): void;
}

/** The host's own state key (no cluster key): made once in the runtime directory. */
export const HOST_STATE_KEY_FILE = "state.key";

/**
 * Reads a key file: it must be a regular file readable by its owner only
 * (like ssh's keys: a key others can read is no secret). Throws
 * INVALID_ARGUMENT for its content (naming the line), PERMISSION_DENIED for
 * its mode, NOT_FOUND when missing.
 */
export function readKeyFile(file: string): Keyring {
  let st;
  try {
    st = statSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new NodeBinError(code === "ENOENT" ? "NOT_FOUND" : "PERMISSION_DENIED", `cluster key ${file}: ${code === "ENOENT" ? "no such file (make one with `node-bin keygen FILE`)" : (err as Error).message}`, {
      details: { file },
      cause: err,
    });
  }
  if (!st.isFile()) throw new NodeBinError("INVALID_ARGUMENT", `cluster key ${file} is not a regular file`, { details: { file } });
  if (process.platform !== "win32" && (st.mode & 0o077) !== 0) {
    throw new NodeBinError("PERMISSION_DENIED", `cluster key ${file} is readable by other users (mode ${(st.mode & 0o777).toString(8)}): \`chmod 600 ${file}\``, { details: { file } });
  }
  if (st.size > 64 * 1024) throw new NodeBinError("INVALID_ARGUMENT", `cluster key ${file} is ${st.size} bytes: not a key file`, { details: { file } });
  return parseKeyring(readFileSync(file, "utf8"), file);
}

/** The host's own state keyring in `runtimeDir`, made on first use. */
export function hostStateKeyring(runtimeDir: string): Keyring {
  const file = join(runtimeDir, HOST_STATE_KEY_FILE);
  createOnce(file, keyFileText([newKeyLine()]));
  return readKeyFile(file);
}

export interface LoadSecurityOptions {
  /** The cluster key file, if any (see resolveKeyFile in cli/net-options.ts). */
  keyFile?: string;
  runtimeDir: string;
  /** Lines about key changes go here. */
  log?: (level: "info" | "warn", line: string) => void;
  /** How often the key file is checked for changes (ms; default 2000; 0: never). */
  watchMs?: number;
}

/** The security provider for a process: CurveZMQ with the keyring in `keyFile`, else none. */
export function loadSecurity(options: LoadSecurityOptions): SecurityProvider {
  if (!options.keyFile) return noSecurity(options.runtimeDir);
  return new CurveSecurity(options.keyFile, readKeyFile(options.keyFile), options);
}

function noSecurity(runtimeDir: string): SecurityProvider {
  let ring: Keyring | undefined;
  return {
    name: "none",
    keyring: undefined,
    get sealRing() {
      return (ring ??= hostStateKeyring(runtimeDir));
    },
    wire: undefined,
    describe: () => "no cluster key: tcp is neither authenticated nor encrypted",
    close() {},
  };
}

class CurveSecurity implements SecurityProvider {
  readonly name = "curve";
  private ring: Keyring;
  private readonly watcher: (() => void) | undefined;
  readonly wire: WireSecurity;

  constructor(
    private readonly file: string,
    ring: Keyring,
    private readonly options: LoadSecurityOptions,
  ) {
    this.ring = ring;
    const self = this;
    this.wire = {
      listenOptions: () => ({ curveServer: true, curveSecretKey: self.ring.current.server.secretKey }),
      connect: (): ConnectSecurity[] =>
        self.ring.keys.map((k) => ({ keyId: k.id, options: { curveServerKey: k.server.publicKey, curvePublicKey: k.client.publicKey, curveSecretKey: k.client.secretKey } })),
      admit: (mechanism, credentials) => self.admit(mechanism, credentials),
      describe: () => `cluster key ${self.ring.current.id}`,
    };
    const watchMs = options.watchMs ?? 2000;
    if (watchMs > 0) {
      this.watcher = () => this.reload();
      watchFile(file, { interval: watchMs, persistent: false }, this.watcher);
    }
  }

  get keyring(): Keyring {
    return this.ring;
  }

  get sealRing(): Keyring {
    return this.ring;
  }

  describe(): string {
    const others = this.ring.keys.length - 1;
    return `cluster key ${this.ring.current.id} from ${this.file}${others ? ` (and ${others} more accepted: ${this.ring.keys.slice(1).map((k) => k.id).join(", ")})` : ""}`;
  }

  private admit(mechanism: string, credentials: Uint8Array[]): ZapVerdict {
    if (mechanism !== "CURVE") return { ok: false, reason: `${mechanism} without CurveZMQ: a cluster key is required` };
    const key = credentials[0];
    if (!key || key.length !== 32) return { ok: false, reason: "no client key" };
    const match = this.ring.keys.find((k) => equal(k.client.publicRaw, key));
    return match ? { ok: true, user: `member/${match.id}` } : { ok: false, reason: "client key of no cluster key held here" };
  }

  private reload(): void {
    const log = this.options.log ?? (() => {});
    let next: Keyring;
    try {
      next = readKeyFile(this.file);
    } catch (err) {
      log("warn", `${NodeBinError.from(err).message}; keeping the keys read before (${this.ring.keys.map((k) => k.id).join(", ")})`);
      return;
    }
    const before = this.ring.keys.map((k) => k.id).join(",");
    if (next.keys.map((k) => k.id).join(",") === before) return;
    this.ring = next;
    log("info", `cluster key file changed: current key ${next.current.id}, accepted ${next.keys.map((k) => k.id).join(", ")} (listeners keep the server key they bound with until restarted)`);
  }

  close(): void {
    if (this.watcher) unwatchFile(this.file, this.watcher);
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/**
 * The cluster key and what is derived from it. A cluster key is 32 random
 * bytes; holding it is what makes a process a member of the cluster. Nothing
 * else is configured: every key a process uses is derived from it with
 * HKDF-SHA256 (RFC 5869), each under its own label, so one file is all an
 * operator distributes and no derived key can be turned back into another:
 * - the CurveZMQ server keypair every tcp listener binds with (a client must
 *   know the server's public key before it connects, and seeds are only
 *   addresses, so all members serve under one server key);
 * - the CurveZMQ client keypair every member connects with (the ZAP handler
 *   admits a connection only when its client key is one of these);
 * - the key that seals state payloads (seal.ts);
 * - a short public id, to say which key a process uses without showing it.
 *
 * A keyring is a file of one or more keys: the first is current (used to
 * connect and to seal), every one is accepted (a connection proving any of
 * them is admitted, a payload sealed with any of them opens). Rotation is
 * adding a new key first, then retiring the old one (README "Cluster key").
 *
 * File format, one key per line, `#` comments:
 *   nodebin-key-v1:<43 characters of base64url: the 32 bytes>
 */
import { createPrivateKey, createPublicKey, hkdfSync, randomBytes } from "node:crypto";
import { NodeBinError } from "../wire/errors.ts";

const PREFIX = "nodebin-key-v1:";
const KEY_BYTES = 32;
/** Most keys in one keyring: a rotation needs two; the bound keeps the handshake's fallback short. */
export const MAX_KEYS = 8;

/** A CurveZMQ keypair, Z85-encoded as zeromq.js takes it. */
export interface CurvePair {
  publicKey: string;
  secretKey: string;
  /** The public key's 32 raw bytes (what a ZAP request carries). */
  publicRaw: Uint8Array;
}

export interface ClusterKey {
  /** Public fingerprint of the key (16 hex digits), safe to print and to send. */
  readonly id: string;
  readonly server: CurvePair;
  readonly client: CurvePair;
  /** Key of the state seal (AES-256-GCM). */
  readonly seal: Uint8Array;
}

export interface Keyring {
  /** The current key (connects, seals): the file's first. */
  readonly current: ClusterKey;
  /** Every key accepted, current first. */
  readonly keys: readonly ClusterKey[];
  /** Where it was read from (for messages). */
  readonly source: string;
}

function derive(secret: Uint8Array, label: string, length = KEY_BYTES): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", secret, new Uint8Array(0), `nodebin ${label} v1`, length));
}

// PKCS #8 wrapping of a raw X25519 private key (RFC 8410): how node:crypto (and Deno's) import one.
const X25519_PKCS8 = Buffer.from("302e020100300506032b656e04220420", "hex");

/** The X25519 public key of a 32-byte secret (CurveZMQ keys are X25519 keys). */
function curvePublic(secret: Uint8Array): Uint8Array {
  const key = createPrivateKey({ key: Buffer.concat([X25519_PKCS8, secret]), format: "der", type: "pkcs8" });
  const spki = createPublicKey(key).export({ format: "der", type: "spki" });
  return new Uint8Array(spki.subarray(spki.length - KEY_BYTES));
}

function curvePair(secret: Uint8Array): CurvePair {
  const publicRaw = curvePublic(secret);
  return { publicKey: z85Encode(publicRaw), secretKey: z85Encode(secret), publicRaw };
}

/** Everything derived from one 32-byte cluster secret. */
export function clusterKey(secret: Uint8Array): ClusterKey {
  if (secret.length !== KEY_BYTES) throw new NodeBinError("INVALID_ARGUMENT", `a cluster key is ${KEY_BYTES} bytes, got ${secret.length}`);
  return {
    id: Buffer.from(derive(secret, "key id", 8)).toString("hex"),
    server: curvePair(derive(secret, "curve server")),
    client: curvePair(derive(secret, "curve client")),
    seal: derive(secret, "state seal"),
  };
}

/** A new key, as one line of a key file. */
export function newKeyLine(): string {
  return PREFIX + randomBytes(KEY_BYTES).toString("base64url");
}

/** The text of a new key file holding `lines` (newest first). */
export function keyFileText(lines: string[]): string {
  return [
    "# node-bin cluster key (node-bin keygen). Anyone who holds this file is a member of the cluster:",
    "# keep it mode 0600, owned by the user node-bin runs as. One key per line: the first is used to",
    "# connect and to seal state, every key listed is accepted (README: \"Cluster key\", rotation).",
    ...lines,
    "",
  ].join("\n");
}

/** The key lines of a key file's text (no validation beyond the prefix). */
export function keyLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
}

/**
 * Parses a key file. Throws INVALID_ARGUMENT naming `source` and the line for
 * anything but keys and comments, a key that is not 32 bytes, a repeated key,
 * no key at all, or more than MAX_KEYS.
 */
export function parseKeyring(text: string, source: string): Keyring {
  const keys: ClusterKey[] = [];
  const seen = new Set<string>();
  const lines = text.split(/\r?\n/);
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const where = `${source}:${i + 1}`;
    if (!line.startsWith(PREFIX)) throw invalid(source, `${where}: not a node-bin cluster key (expected ${PREFIX}..., made by \`node-bin keygen\`)`);
    const body = line.slice(PREFIX.length);
    const bytes = /^[A-Za-z0-9_-]{43}$/.test(body) ? Buffer.from(body, "base64url") : undefined;
    if (!bytes || bytes.length !== KEY_BYTES) throw invalid(source, `${where}: a key is ${KEY_BYTES} bytes in base64url (43 characters), got ${body.length} characters`);
    const key = clusterKey(bytes);
    if (seen.has(key.id)) throw invalid(source, `${where}: key ${key.id} is listed twice`);
    seen.add(key.id);
    keys.push(key);
  }
  if (keys.length === 0) throw invalid(source, `${source}: holds no key (make one with \`node-bin keygen ${source}\`)`);
  if (keys.length > MAX_KEYS) throw invalid(source, `${source}: holds ${keys.length} keys, at most ${MAX_KEYS} (retire old ones: \`node-bin keygen --retire ${source}\`)`);
  return { current: keys[0]!, keys, source };
}

function invalid(file: string, message: string): NodeBinError {
  return new NodeBinError("INVALID_ARGUMENT", message, { details: { file } });
}

// Z85 (ZeroMQ RFC 32), the text form of CurveZMQ keys.
const Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

export function z85Encode(bytes: Uint8Array): string {
  if (bytes.length % 4 !== 0) throw new RangeError("z85: length must be a multiple of 4");
  let out = "";
  for (let i = 0; i < bytes.length; i += 4) {
    let value = ((bytes[i]! << 24) | (bytes[i + 1]! << 16) | (bytes[i + 2]! << 8) | bytes[i + 3]!) >>> 0;
    let chunk = "";
    for (let j = 0; j < 5; j++) {
      chunk = Z85[value % 85]! + chunk;
      value = Math.floor(value / 85);
    }
    out += chunk;
  }
  return out;
}

export function z85Decode(text: string): Uint8Array {
  if (text.length % 5 !== 0) throw new RangeError("z85: length must be a multiple of 5");
  const out = new Uint8Array((text.length / 5) * 4);
  for (let i = 0, o = 0; i < text.length; i += 5, o += 4) {
    let value = 0;
    for (let j = 0; j < 5; j++) {
      const digit = Z85.indexOf(text[i + j]!);
      if (digit < 0) throw new RangeError(`z85: invalid character ${JSON.stringify(text[i + j])}`);
      value = value * 85 + digit;
    }
    if (value > 0xffffffff) throw new RangeError("z85: group out of range");
    out[o] = value >>> 24;
    out[o + 1] = (value >>> 16) & 0xff;
    out[o + 2] = (value >>> 8) & 0xff;
    out[o + 3] = value & 0xff;
  }
  return out;
}

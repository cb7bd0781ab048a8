/**
 * Sealed payloads: authenticated encryption (AES-256-GCM) under a key derived
 * from the cluster key (keys.ts), for what leaves a node's process as bytes
 * and must come back unchanged and unread: state transfer (drain to import).
 *
 * Layout: "NBS1" | key id (8 bytes) | nonce (12 bytes) | ciphertext | tag (16 bytes).
 * The key id says which key of the keyring sealed it, so a payload sealed
 * before a rotation still opens while its key is in the ring. The context
 * (e.g. "state demo.Counter") is authenticated too: a payload sealed for one
 * purpose or component does not open as another's.
 *
 * Nonces are random (96 bits): far below GCM's bound of 2^32 messages per key
 * for the rate at which a cluster moves state.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { NodeBinError } from "../wire/errors.ts";
import type { Keyring } from "./keys.ts";

const MAGIC = new Uint8Array([0x4e, 0x42, 0x53, 0x31]); // "NBS1"
const ID_BYTES = 8;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER = MAGIC.length + ID_BYTES + NONCE_BYTES;

/** Whether `bytes` is laid out as a sealed payload (it may still not open). */
export function isSealed(bytes: Uint8Array): boolean {
  return bytes.length >= HEADER + TAG_BYTES && MAGIC.every((b, i) => bytes[i] === b);
}

/** Seals `plain` with the keyring's current key, bound to `context`. */
export function seal(ring: Keyring, plain: Uint8Array, context: string): Uint8Array {
  const key = ring.current;
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key.seal, nonce);
  cipher.setAAD(new TextEncoder().encode(context));
  const body = Buffer.concat([cipher.update(plain), cipher.final()]);
  const out = new Uint8Array(HEADER + body.length + TAG_BYTES);
  out.set(MAGIC, 0);
  out.set(Buffer.from(key.id, "hex"), MAGIC.length);
  out.set(nonce, MAGIC.length + ID_BYTES);
  out.set(body, HEADER);
  out.set(cipher.getAuthTag(), HEADER + body.length);
  return out;
}

/**
 * Opens a payload sealed by seal() with any key of the ring, for `context`.
 * Throws UNAUTHENTICATED (nothing of it is returned) when it is not sealed,
 * was sealed with a key the ring does not hold, for another context, or was
 * changed in any byte.
 */
export function open(ring: Keyring, sealed: Uint8Array, context: string): Uint8Array {
  if (!isSealed(sealed)) {
    throw new NodeBinError("UNAUTHENTICATED", `${context}: the payload is not sealed with a cluster key (${sealed.length} bytes); refused unread`, { details: { context } });
  }
  const id = Buffer.from(sealed.subarray(MAGIC.length, MAGIC.length + ID_BYTES)).toString("hex");
  const key = ring.keys.find((k) => k.id === id);
  if (!key) {
    throw new NodeBinError("UNAUTHENTICATED", `${context}: the payload is sealed with key ${id}, which ${ring.source} does not hold (it holds ${ring.keys.map((k) => k.id).join(", ")}); refused unread`, {
      details: { context, key: id },
    });
  }
  const nonce = sealed.subarray(MAGIC.length + ID_BYTES, HEADER);
  const body = sealed.subarray(HEADER, sealed.length - TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key.seal, nonce);
  decipher.setAAD(new TextEncoder().encode(context));
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    return new Uint8Array(Buffer.concat([decipher.update(body), decipher.final()]));
  } catch {
    throw new NodeBinError("UNAUTHENTICATED", `${context}: the sealed payload does not authenticate (changed on the way, or sealed for something else); refused unread`, { details: { context, key: id } });
  }
}

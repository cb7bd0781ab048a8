/**
 * `node-bin keygen [FILE]`: makes a cluster key (security/keys.ts), and the
 * two steps of a rotation: --add puts a new key first in an existing file
 * (the old ones stay accepted), --retire keeps only the first.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { cac } from "cac";
import { parseKeyring, keyFileText, keyLines, newKeyLine, MAX_KEYS } from "../security/keys.ts";
import { readKeyFile } from "../security/provider.ts";
import { NodeBinError } from "../wire/errors.ts";
import { checkFlags, reportError, stdio, UsageError } from "./output.ts";
import { VERSION } from "./version.ts";

const USAGE = `[FILE] [options]

  Makes a new cluster key. Every host of a cluster gets the same key file
  (--cluster-key FILE, $NODEBIN_CLUSTER_KEY_FILE, or cluster.key beside
  node-bin): then every tcp socket uses CurveZMQ, and only holders of the key
  may join the network or call its components. Without FILE the key file is
  printed; with FILE it is written (mode 0600), never over an existing file.

  Rotation (no downtime): --add FILE puts a new key first (used from now on to
  connect and to seal state; the old key stays accepted); copy the file to
  every host (running processes read it again within seconds); restart the
  processes at leisure (a listener serves the key it started with); then
  --retire FILE keeps only the new key, and copy it again.`;

export async function runKeygen(argv: string[]): Promise<number> {
  const cli = cac("node-bin keygen");
  cli
    .usage(USAGE)
    .option("--add", "rotation, step 1: put a new key first in FILE, keeping the others accepted")
    .option("--retire", "rotation, last step: keep only FILE's first key")
    .option("-v, --version", "print the version")
    .help();
  const output = stdio(false);
  let parsed;
  try {
    parsed = cli.parse(["node", "node-bin keygen", ...argv], { run: false });
    checkFlags(cli, argv);
  } catch (err) {
    return reportError(output, err, "run `node-bin keygen --help` for usage");
  }
  if (parsed.options.help) return 0;
  if (parsed.options.version) {
    output.out(VERSION);
    return 0;
  }
  try {
    const o = parsed.options as { add?: boolean; retire?: boolean };
    if (parsed.args.length > 1) throw new UsageError(`keygen takes one FILE, got ${parsed.args.length}`);
    const file = parsed.args[0] === undefined ? undefined : resolve(String(parsed.args[0]));
    if (o.add && o.retire) throw new UsageError("give --add or --retire, not both");
    if ((o.add || o.retire) && !file) throw new UsageError(`--${o.add ? "add" : "retire"} needs the key FILE to change`);
    if (!file) {
      process.stdout.write(keyFileText([newKeyLine()]));
      return 0;
    }
    if (o.add || o.retire) {
      const ring = readKeyFile(file);
      const lines = keyLines(readFileSync(file, "utf8"));
      if (o.add && lines.length >= MAX_KEYS) throw new NodeBinError("FAILED_PRECONDITION", `${file} holds ${lines.length} keys already (at most ${MAX_KEYS}): --retire first`);
      const next = o.add ? [newKeyLine(), ...lines] : lines.slice(0, 1);
      const text = keyFileText(next);
      const after = parseKeyring(text, file);
      writeKeyFile(file, text, true);
      if (o.add) output.out(`${file}: new current key ${after.current.id}; still accepted: ${ring.keys.map((k) => k.id).join(", ")}`);
      else output.out(`${file}: kept key ${after.current.id}; retired: ${ring.keys.slice(1).map((k) => k.id).join(", ") || "none"}`);
      return 0;
    }
    if (existsSync(file)) {
      throw new NodeBinError("ALREADY_EXISTS", `${file} exists: a key file is never overwritten (--add rotates to a new key, keeping the old one accepted)`, { details: { file } });
    }
    const text = keyFileText([newKeyLine()]);
    writeKeyFile(file, text, false);
    output.out(`${file}: cluster key ${parseKeyring(text, file).current.id} (mode 0600; give every host of the cluster this file)`);
    return 0;
  } catch (err) {
    return reportError(output, err, "run `node-bin keygen --help` for usage");
  }
}

/** Writes a key file whole (temporary file, mode 0600, renamed over): a reader never sees half of it. */
function writeKeyFile(file: string, text: string, replace: boolean): void {
  const temp = join(dirname(file), `.${randomBytes(6).toString("hex")}.key-tmp`);
  try {
    writeFileSync(temp, text, { mode: 0o600, flag: "wx" });
    chmodSync(temp, 0o600); // whatever the umask
    if (!replace && existsSync(file)) throw new NodeBinError("ALREADY_EXISTS", `${file} exists`, { details: { file } });
    renameSync(temp, file);
  } catch (err) {
    rmSync(temp, { force: true });
    if (err instanceof NodeBinError) throw err;
    throw new NodeBinError("PERMISSION_DENIED", `cannot write ${file}: ${(err as Error).message}`, { details: { file }, cause: err });
  }
}

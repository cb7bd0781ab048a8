/**
 * `npm run demo`: starts `node-bin dev` on the example components (in a
 * private runtime directory, so it never clashes with a dev you run
 * yourself), waits for its readiness line, makes a few calls with
 * `node-bin client` exactly as you would type them, and stops dev.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../", import.meta.url));
const bin = join(root, "bin", "node-bin");
const runtime = mkdtempSync(join(tmpdir(), "node-bin-demo-"));
const env = { ...process.env, NODEBIN_RUNTIME_DIR: runtime };

console.log("$ node-bin dev --components examples/components");
const dev = spawn(process.execPath, [bin, "dev", "--components", join(root, "examples", "components")], { env, stdio: ["ignore", "pipe", "inherit"] });
const ready = await new Promise<boolean>((resolve) => {
  let out = "";
  const timer = setTimeout(() => resolve(false), 30_000);
  dev.stdout.on("data", (d: Buffer) => {
    out += d;
    process.stdout.write(d);
    if (/ready at /.test(out)) {
      clearTimeout(timer);
      resolve(true);
    }
  });
  dev.on("exit", () => resolve(false));
});

let failed = !ready;
if (ready) {
  for (const args of [
    ["client", "call", "demo.Greeter/Hello", '{"name":"Ada"}'],
    ["client", "call", "demo.Welcome/Visit", '{"name":"Ada"}', "--meta", "via=demo"],
    ["client", "send", "demo.Greeter/Sign", '{"name":"Ada"}'],
    ["client", "call", "demo.Greeter/Guests"],
    ["client", "stream", "demo.Ticker/Count", '{"count":3,"intervalMs":100}'],
    ["client", "broadcast", "demo.Board/Post", '{"text":"hello, every board"}'],
    ["client", "call", "demo.Board/Read"],
    ["client", "list"],
    ["client", "call", "demo.Greeter/Helo", '{"name":"Ada"}'],
  ]) {
    console.log(`\n$ node-bin ${args.map((a) => (/^[\w./=-]+$/.test(a) ? a : `'${a}'`)).join(" ")}`);
    const r = spawnSync(process.execPath, [bin, ...args], { env, stdio: "inherit" });
    // The last call shows an error on purpose: a typo gets NOT_FOUND with suggestions (exit 5).
    if (r.status !== 0 && args[2] !== "demo.Greeter/Helo") failed = true;
  }
}
dev.kill("SIGTERM");
await new Promise((resolve) => dev.once("exit", resolve));
rmSync(runtime, { recursive: true, force: true });
process.exitCode = failed ? 1 : 0;

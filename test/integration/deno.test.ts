// The source must stay runnable under Deno: the in-process path, run by the
// deno binary from the npm registry (devDependency "deno").
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { ROOT } from "../lib/processes.ts";

const deno = join(ROOT, "node_modules", ".bin", process.platform === "win32" ? "deno.cmd" : "deno");
const usable = existsSync(deno) && spawnSync(deno, ["--version"], { timeout: 30_000 }).status === 0;

t.test("deno - the in-process path runs under Deno unchanged", { skip: usable ? false : `no runnable deno binary at ${deno} (npm ci installs it)` }, async (t) => {
  const run = spawnSync(deno, ["run", "--allow-read", "--allow-env", "--allow-sys", join(ROOT, "test", "lib", "deno-smoke.ts")], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 120_000,
    env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
  });
  t.equal(run.status, 0, run.stderr);
  const result = JSON.parse(run.stdout.trim().split("\n").pop()!) as Record<string, unknown>;
  t.same(result, {
    runtime: "deno",
    components: ["counter", "greeter", "welcome"],
    loadErrors: 0,
    hello: "Hello, Deno!",
    visit: { greeting: "Hello, Deno!", via: "deno" },
    burst: 400,
    count: "400",
    notFound: "NOT_FOUND",
    invalid: "INVALID_ARGUMENT",
    internal: "INTERNAL",
    deadline: "DEADLINE_EXCEEDED",
  });
});

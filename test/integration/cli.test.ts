// The command line itself, without any process to talk to: help, version, usage errors.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { ROOT, privateRuntime, runCli } from "../lib/processes.ts";

t.test("cli - --help and --version on every subcommand; unknown commands are usage errors", async (t) => {
  const env = privateRuntime(t);
  const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
  for (const args of [[], ["dev"], ["container"], ["client"], ["client", "call"], ["client", "send"], ["client", "list"], ["client", "nodes"]]) {
    const v = await runCli([...args, "--version"], env);
    t.equal(v.code, 0, `${args.join(" ")} --version exits 0`);
    t.equal(v.stdout.trim(), version, `${args.join(" ")} --version prints the version`);
    const h = await runCli([...args, "--help"], env);
    t.equal(h.code, 0, `${args.join(" ")} --help exits 0`);
    t.match(h.stdout, /Usage/, `${args.join(" ")} --help prints usage`);
  }
  for (const args of [["deev"], ["client", "cal"], ["client"], ["dev", "--instances", "0"], ["client", "call", "x", "--scope", "galaxy"], ["container"], ["container", "--component", "x", "--seed", "a:b:c"], ["client", "list", "--seed", "1.2.3.4", "--endpoint", "tcp://1.2.3.4:1"]]) {
    const r = await runCli(args, env);
    t.equal(r.code, 64, `${args.join(" ")}: usage error`);
    t.match(r.stderr, /^error: /m, `${args.join(" ")}: says what is wrong`);
  }
});

// The command line itself, without any process to talk to: help, version, usage errors.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { ROOT, privateRuntime, runCli } from "../lib/processes.ts";

t.test("cli - --help and --version on every subcommand; unknown commands are usage errors", async (t) => {
  const env = privateRuntime(t);
  const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
  for (const args of [[], ["dev"], ["container"], ["client"], ["client", "call"], ["client", "send"], ["client", "stream"], ["client", "list"], ["client", "nodes"]]) {
    const v = await runCli([...args, "--version"], env);
    t.equal(v.code, 0, `${args.join(" ")} --version exits 0`);
    t.equal(v.stdout.trim(), version, `${args.join(" ")} --version prints the version`);
    const h = await runCli([...args, "--help"], env);
    t.equal(h.code, 0, `${args.join(" ")} --help exits 0`);
    t.match(h.stdout, /Usage/, `${args.join(" ")} --help prints usage`);
  }
  for (const args of [["deev"], ["client", "cal"], ["client"], ["dev", "--instances", "0"], ["client", "call", "x", "--scope", "galaxy"], ["container"], ["container", "--component", "x", "--seed", "a:b:c"], ["client", "list", "--seed", "1.2.3.4", "--endpoint", "tcp://1.2.3.4:1"], ["client", "stream", "x", "--window", "0"], ["client", "stream", "x", "--window", "5000"]]) {
    const r = await runCli(args, env);
    t.equal(r.code, 64, `${args.join(" ")}: usage error`);
    t.match(r.stderr, /^error: /m, `${args.join(" ")}: says what is wrong`);
  }
});

t.test("cli - an unknown flag is a usage error on every subcommand, named as typed, with the closest known flag for a likely typo", async (t) => {
  const env = privateRuntime(t);
  // A port of its own: a command that ignored the flag would start serving, and must not take 7400.
  const port = String(20000 + Math.floor(Math.random() * 20000));
  const subcommands = [
    ["dev", "--discovery-port", port],
    ["container", "--component", "greeter", "--discovery-port", port],
    ["governor", "--discovery-port", port],
    ["governor", "status", "--discovery-port", port],
    ["governor", "set", "capacity", "4", "--discovery-port", port],
    ["governor", "stop", "--discovery-port", port],
    ["deploy", "."],
    ["client", "call", "demo.Greeter/Hello"],
    ["client", "send", "demo.Greeter/Sign"],
    ["client", "stream", "demo.Ticker/Count"],
    ["client", "list"],
    ["client", "nodes"],
    ["client"],
  ];
  for (const args of subcommands) {
    const r = await runCli([...args, "--bogus"], env, { timeoutMs: 15_000 });
    t.equal(r.code, 64, `${args.join(" ")} --bogus: usage error`);
    t.match(r.stderr, /^error: Unknown option `--bogus`$/m, `${args.join(" ")} --bogus: names the flag`);
  }
  const typos: [string[], RegExp][] = [
    [["dev", "--sed", "127.0.0.1", "--discovery-port", port], /^error: Unknown option `--sed` \(did you mean `--seed`\?\)$/m],
    [["container", "--component", "greeter", "--discovery-prot", port], /Unknown option `--discovery-prot` \(did you mean `--discovery-port`\?\)/],
    [["governor", "--capacty", "3", "--discovery-port", port], /Unknown option `--capacty` \(did you mean `--capacity`\?\)/],
    [["governor", "status", "--jsno"], /Unknown option `--jsno` \(did you mean `--json`\?\)/],
    [["client", "list", "--tiemout", "50"], /Unknown option `--tiemout` \(did you mean `--timeout`\?\)/],
    [["dev", "-x", "--no-seed", "--discovery-port", port], /Unknown options `-x`, `--no-seed`/],
    [["dev", "--only", "--discovery-port", port], /^error: option `--only <names>` value is missing$/m],
  ];
  for (const [args, message] of typos) {
    const r = await runCli(args, env, { timeoutMs: 15_000 });
    t.equal(r.code, 64, `${args.join(" ")}: usage error`);
    t.match(r.stderr, message, `${args.join(" ")}: ${message}`);
  }
});

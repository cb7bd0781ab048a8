// The command line itself, without any process to talk to: help, version, usage errors.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { privateRuntime, ROOT, runCli, testPort } from "../lib/processes.ts";
import { sideBySide } from "../lib/side-by-side.ts";

t.test("cli - --help and --version on every subcommand; unknown commands are usage errors", async (t) => {
  const env = privateRuntime(t);
  const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
  const commands = [[], ["dev"], ["container"], ["gateway"], ["client"], ["client", "call"], ["client", "send"], ["client", "stream"], ["client", "list"], ["client", "nodes"]];
  const usageErrors = [["deev"], ["client", "cal"], ["client"], ["dev", "--instances", "0"], ["client", "call", "x", "--scope", "galaxy"], ["container"], ["container", "--component", "x", "--seed", "a:b:c"], ["client", "list", "--seed", "1.2.3.4", "--endpoint", "tcp://1.2.3.4:1"], ["client", "stream", "x", "--window", "0"], ["client", "stream", "x", "--window", "5000"], ["gateway", "--remote-network", "x y"], ["gateway", "--network", "b", "--remote-network", "b"], ["gateway", "--network", "default"]];
  const runs = await sideBySide([...commands.flatMap((args) => [[...args, "--version"], [...args, "--help"]]), ...usageErrors], (args) => runCli(args, env, { timeoutMs: 60_000 }));
  for (const [i, args] of commands.entries()) {
    const v = runs[2 * i]!;
    t.equal(v.code, 0, `${args.join(" ")} --version exits 0`);
    t.equal(v.stdout.trim(), version, `${args.join(" ")} --version prints the version`);
    const h = runs[2 * i + 1]!;
    t.equal(h.code, 0, `${args.join(" ")} --help exits 0`);
    t.match(h.stdout, /Usage/, `${args.join(" ")} --help prints usage`);
  }
  for (const [i, args] of usageErrors.entries()) {
    const r = runs[2 * commands.length + i]!;
    t.equal(r.code, 64, `${args.join(" ")}: usage error`);
    t.match(r.stderr, /^error: /m, `${args.join(" ")}: says what is wrong`);
  }
});

t.test("cli - an unknown flag is a usage error on every subcommand, named as typed, with the closest known flag for a likely typo", async (t) => {
  const env = privateRuntime(t);
  // A port of its own: a command that ignored the flag would start serving, and must not take 7400.
  const port = String(testPort());
  const subcommands = [
    ["dev", "--discovery-port", port],
    ["container", "--component", "greeter", "--discovery-port", port],
    ["governor", "--discovery-port", port],
    ["governor", "status", "--discovery-port", port],
    ["governor", "set", "capacity", "4", "--discovery-port", port],
    ["governor", "stop", "--discovery-port", port],
    ["deploy", "."],
    ["gateway", "--remote-network", "b", "--discovery-port", port, "--remote-discovery-port", port],
    ["client", "call", "demo.Greeter/Hello"],
    ["client", "send", "demo.Greeter/Sign"],
    ["client", "stream", "demo.Ticker/Count"],
    ["client", "list"],
    ["client", "nodes"],
    ["client"],
  ];
  const bogus = await sideBySide(subcommands, (args) => runCli([...args, "--bogus"], env, { timeoutMs: 30_000 }));
  for (const [i, args] of subcommands.entries()) {
    const r = bogus[i]!;
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
  const typoRuns = await sideBySide(typos, ([args]) => runCli(args, env, { timeoutMs: 30_000 }));
  for (const [i, [args, message]] of typos.entries()) {
    const r = typoRuns[i]!;
    t.equal(r.code, 64, `${args.join(" ")}: usage error`);
    t.match(r.stderr, message, `${args.join(" ")}: ${message}`);
  }
});

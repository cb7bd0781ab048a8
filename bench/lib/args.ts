/**
 * The command-line flags every bench driver takes: `--quick` (one round,
 * fewer calls), `--rounds N` (default 3, or 1 with --quick), and any other
 * `--name value` through `flag()`. A bad --rounds exits 64 naming the script.
 */
export interface BenchArgs {
  quick: boolean;
  rounds: number;
  /** The value after `--name`, if given. */
  flag(name: string): string | undefined;
}

export function benchArgs(script: string, argv: readonly string[] = process.argv.slice(2)): BenchArgs {
  const quick = argv.includes("--quick");
  const flag = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const rounds = Number(flag("--rounds") ?? (quick ? 1 : 3));
  if (!Number.isInteger(rounds) || rounds < 1) {
    console.error(`${script}: --rounds takes a whole number >= 1`);
    process.exit(64);
  }
  return { quick, rounds, flag };
}

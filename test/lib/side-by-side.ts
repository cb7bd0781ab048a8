/**
 * Runs `run` on every item, `at` at a time (each a process of its own that
 * talks to no other: CLI invocations), and resolves with the results in the
 * items' order, so the checks that follow are made in that order. Side by
 * side each takes longer on a loaded machine: give the runs a longer bound
 * before they are killed (a bound only stops a hung process; a command that
 * serves instead of refusing is still killed, and fails its check).
 */
export async function sideBySide<T, R>(items: readonly T[], run: (item: T) => Promise<R>, at = 3): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(at, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await run(items[i]!);
      }
    }),
  );
  return results;
}

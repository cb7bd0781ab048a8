import t from "tap";
import { Fifo } from "../../src/component/fifo.ts";
import { seededRandom } from "../lib/seeded-random.ts";

t.test("fifo - items come out in the order they went in", async (t) => {
  const q = new Fifo<number>();
  t.equal(q.length, 0);
  t.equal(q.shift(), undefined, "empty: undefined");
  for (let i = 0; i < 100; i++) q.push(i);
  t.equal(q.length, 100);
  const out: number[] = [];
  for (let x = q.shift(); x !== undefined; x = q.shift()) out.push(x);
  t.same(
    out,
    Array.from({ length: 100 }, (_, i) => i),
  );
  t.equal(q.length, 0);
});

t.test("fifo - growing while the ring has wrapped around keeps the order", async (t) => {
  const q = new Fifo<number>();
  for (let i = 0; i < 12; i++) q.push(i);
  for (let i = 0; i < 10; i++) t.equal(q.shift(), i);
  // head is now at 10 of 16: the next pushes wrap around, then force a grow.
  for (let i = 12; i < 40; i++) q.push(i);
  const out: number[] = [];
  while (q.length) out.push(q.shift()!);
  t.same(
    out,
    Array.from({ length: 30 }, (_, i) => i + 10),
  );
});

t.test("fifo - random pushes and shifts match an array model", async (t) => {
  const random = seededRandom(42);
  const q = new Fifo<number>();
  const model: number[] = [];
  let next = 0;
  let mismatches = 0;
  for (let step = 0; step < 20_000; step++) {
    if (random() < 0.55) {
      q.push(next);
      model.push(next++);
    } else if (q.shift() !== model.shift()) mismatches++;
    if (q.length !== model.length) mismatches++;
  }
  t.equal(mismatches, 0);
  t.ok(next > 10_000, "plenty of traffic");
});

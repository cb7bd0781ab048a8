/**
 * The Prometheus metrics of one process, on prom-client: a Registry of its
 * own (never prom-client's global one, so that several processes in one test
 * process do not collide), gauges and counters read from the views a role
 * gives it at scrape time (sources.ts), and the calls its nodes handle,
 * counted by an inbound interceptor.
 *
 * Calls are tallied here (CallTally), not in a prom-client Histogram: a
 * governor exports its children's calls from their pongs, already bucketed,
 * which a Histogram cannot take (it only observes); one tally type carried in
 * Ping and rendered the same way serves both the process's own calls and its
 * children's. Everything else is prom-client's: the registry, the text
 * format, the gauges and counters, the Node.js process metrics.
 *
 * The series (labels in braces; a governor adds `component` and `pid` to its
 * children's):
 * - nodebin_calls_total{method,code}, nodebin_call_duration_seconds{method,code} (histogram)
 * - nodebin_queue_length / nodebin_queue_capacity / nodebin_queue_wait_seconds{component,node}
 * - nodebin_messages_rejected_total{component,node}: refused by a node without running its handler
 * - nodebin_messages_refused_total{reason}: dropped or refused by the transport
 * - nodebin_membership_nodes, nodebin_membership_hosts (the table's nodes and their hosts), nodebin_leases,
 *   and as host agent nodebin_gossip_hosts{state}, nodebin_gossip_bytes_total{direction},
 *   nodebin_gossip_messages_total{direction}
 * - a governor: nodebin_capacity, nodebin_capacity_used, nodebin_component_desired{component},
 *   nodebin_children{component,phase}, nodebin_restarts_total{component}, nodebin_zombies_total{component},
 *   nodebin_child_resident_memory_bytes{component,pid}
 * - a governor with a provider plugin: nodebin_provider_hosts, nodebin_provider_unmet_total,
 *   nodebin_provider_launches_total{outcome}, nodebin_provider_releases_total{outcome},
 *   nodebin_provider_skipped_total{action,reason}
 * - nodebin_info{role,host,version} (1)
 */
import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from "prom-client";
import type { InboundInterceptor, Next, InboundCall } from "../component/interceptor.ts";
import type { CallCount, PingReply } from "../wire/control.ts";
import { NodeBinError } from "../wire/errors.ts";
import type { MetricsOptions, MetricsPlugin } from "./plugin.ts";
import { MetricsServer, type MetricsAddress } from "./server.ts";
import type { GovernorView, ProcessView, ProviderSample } from "./sources.ts";

/**
 * Default upper bounds (seconds) of the call duration buckets: from 100 us
 * (an in-process call takes about 10 us, one over ipc about 0.3 ms) to 30 s
 * (the default call deadline).
 */
export const CALL_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

interface TallyRow {
  method: string;
  code: string;
  count: number;
  seconds: number;
  /** Calls per bucket, not cumulative: [i] took at most bounds[i] and more than bounds[i - 1]. */
  perBucket: number[];
}

/**
 * Calls by method and outcome code, with their durations in buckets. A row
 * per method and code that occurred: the methods are the node's own (a
 * message for an unknown method is refused before any link sees it) and the
 * codes a closed set, so the rows are bounded.
 */
export class CallTally {
  readonly bounds: readonly number[];
  private readonly rows = new Map<string, TallyRow>();

  /** Throws INVALID_ARGUMENT unless `bounds` are finite, positive and ascending. */
  constructor(bounds: readonly number[] = CALL_BUCKETS) {
    if (!bounds.every((b, i) => Number.isFinite(b) && b > 0 && (i === 0 || b > bounds[i - 1]!))) {
      throw new NodeBinError("INVALID_ARGUMENT", `call duration buckets must be finite, positive and ascending, got ${JSON.stringify(bounds)}`);
    }
    this.bounds = [...bounds];
  }

  record(method: string, code: string, seconds: number): void {
    const key = `${code} ${method}`;
    let row = this.rows.get(key);
    if (!row) this.rows.set(key, (row = { method, code, count: 0, seconds: 0, perBucket: new Array<number>(this.bounds.length).fill(0) }));
    row.count++;
    row.seconds += seconds;
    const { bounds } = this;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    if (i < bounds.length) row.perBucket[i]!++;
  }

  /** Every row, its buckets cumulative (as Ping carries them and Prometheus reads them), sorted by method then code. */
  snapshot(): CallCount[] {
    return [...this.rows.values()]
      .sort((a, b) => (a.method === b.method ? (a.code < b.code ? -1 : 1) : a.method < b.method ? -1 : 1))
      .map((r) => {
        let n = 0;
        return { method: r.method, code: r.code, count: r.count, seconds: r.seconds, buckets: r.perBucket.map((c) => (n += c)) };
      });
  }
}

/**
 * The inbound link that counts every message of a node into `tally`: its
 * method, its outcome code (OK, or the code the caller gets) and how long it
 * took from its turn in the queue to its encoded reply (queue wait is its
 * own gauge). The outcome passes through unchanged.
 */
export function callInterceptor(tally: CallTally, now: () => number = () => globalThis.performance.now()): InboundInterceptor {
  return (next: Next<InboundCall>) => async (call: InboundCall) => {
    const start = now();
    let code = "OK";
    try {
      return await next(call);
    } catch (err) {
      // The chain below rejects with NodeBinErrors only (interceptor.ts); anything else would be INTERNAL to the caller too.
      code = err instanceof NodeBinError ? err.code : "INTERNAL";
      throw err;
    } finally {
      tally.record(call.method, code, (now() - start) / 1000);
    }
  };
}

type Labels = Record<string, string | number>;
interface Sample {
  labels: Labels;
  value: number;
}

/** A call row of one process (own: no labels of its own; a governor's child: component and pid). */
interface CallSeries {
  labels: Labels;
  bounds: readonly number[];
  call: CallCount;
}

/**
 * A histogram whose buckets are read, already counted, at scrape time: the
 * object prom-client's Registry takes for a metric (a name, help, type and
 * the values it formats), since its own Histogram can only observe.
 */
class TalliedHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly read: () => Iterable<CallSeries>,
  ) {}

  get(): Promise<{ name: string; help: string; type: "histogram"; aggregator: "sum"; values: { metricName: string; labels: Labels; value: number }[] }> {
    const values: { metricName: string; labels: Labels; value: number }[] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, bounds, call } of this.read()) {
      bounds.forEach((le, i) => values.push({ metricName: bucket, labels: { ...labels, le }, value: call.buckets[i] ?? call.count }));
      values.push({ metricName: bucket, labels: { ...labels, le: "+Inf" }, value: call.count });
      values.push({ metricName: `${this.name}_sum`, labels, value: call.seconds });
      values.push({ metricName: `${this.name}_count`, labels, value: call.count });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }

  /** Registry.resetMetrics(): nothing is kept here to reset. */
  reset(): void {}
}

/** The built-in metrics plugin: see the module header and plugin.ts. */
export class PrometheusMetrics implements MetricsPlugin {
  readonly kind = "metrics";
  readonly registry = new Registry();
  readonly interceptor: InboundInterceptor;
  private readonly tally: CallTally;
  private process: ProcessView | undefined;
  private governor: GovernorView | undefined;
  private server: MetricsServer | undefined;

  /** Throws INVALID_ARGUMENT for bad buckets. */
  constructor(options: MetricsOptions) {
    this.tally = new CallTally(options.buckets);
    this.interceptor = callInterceptor(this.tally, options.now);
    const r = this.registry;
    gauge(r, "nodebin_info", "This node-bin process: its role, host and version (always 1).", ["role", "host", "version"], () => [
      { labels: { role: options.role, host: options.host ?? "", version: options.version ?? "" }, value: 1 },
    ]);
    counter(r, "nodebin_calls_total", "Requests handled by the nodes, by method and outcome code (OK or the error code the caller got).", ["component", "pid", "method", "code"], () =>
      [...this.callSeries()].map((s) => ({ labels: s.labels, value: s.call.count })),
    );
    const duration = new TalliedHistogram("nodebin_call_duration_seconds", "Time a node took for a request, from its turn in the queue to its reply, by method and outcome code.", () => this.callSeries());
    r.registerMetric(duration as unknown as Metric);
    this.processFamilies();
    if (options.processMetrics) {
      collectDefaultMetrics({ register: r });
      // Gauges named *_total, which promtool's lint refuses (only counters end in _total); their *_total-less kin stay.
      for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) r.removeSingleMetric(name);
    }
  }

  callStats(): Pick<PingReply, "calls" | "callBuckets"> {
    return { calls: this.tally.snapshot(), callBuckets: [...this.tally.bounds] };
  }

  observeProcess(view: ProcessView): void {
    if (this.process) throw new NodeBinError("FAILED_PRECONDITION", "the metrics plugin observes a process already");
    this.process = view;
  }

  observeGovernor(view: GovernorView): void {
    if (this.governor) throw new NodeBinError("FAILED_PRECONDITION", "the metrics plugin observes a governor already");
    this.governor = view;
    this.governorFamilies(view);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  collect(): Promise<string> {
    return this.registry.metrics();
  }

  async serve(address: MetricsAddress): Promise<string> {
    if (this.server) throw new NodeBinError("FAILED_PRECONDITION", `metrics are served at ${this.server.url} already`);
    this.server = await MetricsServer.listen(address, async () => ({ contentType: this.contentType, body: await this.collect() }));
    return this.server.url;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    await server?.close();
  }

  /** The process's own call rows, then its children's (a governor's). */
  private *callSeries(): Iterable<CallSeries> {
    for (const call of this.tally.snapshot()) yield { labels: { method: call.method, code: call.code }, bounds: this.tally.bounds, call };
    for (const child of this.governor?.children() ?? []) {
      const s = child.stats;
      if (!s) continue;
      for (const call of s.calls) yield { labels: { component: child.component, pid: child.pid, method: call.method, code: call.code }, bounds: s.callBuckets, call };
    }
  }

  /**
   * The families every process has: its nodes' queues, what its transport
   * refused, its membership and gossip. A governor's children's queues and
   * refusals join its own in the same families, labelled with component and pid.
   */
  private processFamilies(): void {
    const r = this.registry;
    const nodes = () => {
      const own = (this.process?.nodes() ?? []).map((n) => ({ labels: { component: n.component, node: n.id } as Labels, ...n }));
      const children = (this.governor?.children() ?? []).flatMap((c) =>
        c.stats?.node ? [{ labels: { component: c.component, pid: c.pid, node: c.stats.node } as Labels, queued: c.stats.queued, capacity: c.stats.capacity, queueWaitMs: c.stats.queueWaitMs, rejected: c.stats.rejected }] : [],
      );
      return [...own, ...children];
    };
    const nodeLabels = ["component", "pid", "node"];
    gauge(r, "nodebin_queue_length", "Messages waiting in a node's queue.", nodeLabels, () => nodes().map((n) => ({ labels: n.labels, value: n.queued })));
    gauge(r, "nodebin_queue_capacity", "A node's queue limit (past it, callers get RESOURCE_EXHAUSTED).", nodeLabels, () => nodes().map((n) => ({ labels: n.labels, value: n.capacity })));
    gauge(r, "nodebin_queue_wait_seconds", "Age of the oldest message in a node's queue (0 when it is empty).", nodeLabels, () => nodes().map((n) => ({ labels: n.labels, value: n.queueWaitMs / 1000 })));
    counter(r, "nodebin_messages_rejected_total", "Messages a node refused without running its handler (not serving, queue full, refused by a link).", nodeLabels, () =>
      nodes().map((n) => ({ labels: n.labels, value: n.rejected })),
    );
    counter(r, "nodebin_messages_refused_total", "Input the transport dropped or refused, by reason (bounds, undecodable frames, foreign answers, ...).", ["component", "pid", "reason"], () => [
      ...Object.entries(this.process?.refused() ?? {}).map(([reason, value]) => ({ labels: { reason } as Labels, value })),
      ...(this.governor?.children() ?? []).flatMap((c) => Object.entries(c.stats?.refused ?? {}).map(([reason, value]) => ({ labels: { component: c.component, pid: c.pid, reason } as Labels, value }))),
    ]);
    // (A gauge without labels always has a sample: these read 0 before the process is observed.)
    gauge(r, "nodebin_membership_nodes", "Nodes in this process's membership table (its own and those it knows of).", [], () => [{ labels: {}, value: this.process?.membership().nodes ?? 0 }]);
    gauge(r, "nodebin_membership_hosts", "Distinct hosts the nodes in this process's membership table run on.", [], () => [{ labels: {}, value: this.process?.membership().hosts ?? 0 }]);
    const agent = () => this.process?.agent() ?? {};
    gauge(r, "nodebin_leases", "Container leases this process holds as its host's agent (0 unless it is the agent).", [], () => [{ labels: {}, value: agent().leases ?? 0 }]);
    gauge(r, "nodebin_gossip_hosts", "Other hosts this host agent's gossip knows, alive or tombstoned (only while this process is the agent).", ["state"], () => {
      const a = agent();
      return a.hosts === undefined ? [] : [{ labels: { state: "alive" }, value: a.hosts }, { labels: { state: "tombstone" }, value: a.tombstones ?? 0 }];
    });
    const both = (sent: string, received: string) => () => {
      const a = agent();
      return a[sent] === undefined ? [] : [{ labels: { direction: "sent" }, value: a[sent]! }, { labels: { direction: "received" }, value: a[received] ?? 0 }];
    };
    counter(r, "nodebin_gossip_bytes_total", "Gossip bytes this host agent sent to and received from other hosts (since it became the agent).", ["direction"], both("bytesSent", "bytesReceived"));
    counter(r, "nodebin_gossip_messages_total", "Gossip messages this host agent sent to and received from other hosts (since it became the agent).", ["direction"], both("messagesSent", "messagesReceived"));
  }

  /** A governor's own families: its host's capacity, its components, restarts and zombies. */
  private governorFamilies(g: GovernorView): void {
    const r = this.registry;
    gauge(r, "nodebin_capacity", "Most container processes this governor runs on its host.", [], () => [{ labels: {}, value: g.capacity().capacity }]);
    gauge(r, "nodebin_capacity_used", "Container processes this governor runs now (slots in use).", [], () => [{ labels: {}, value: g.capacity().used }]);
    gauge(r, "nodebin_component_desired", "Nodes the governor wants of a component now.", ["component"], () => g.components().map((c) => ({ labels: { component: c.name }, value: c.desired })));
    gauge(r, "nodebin_children", "The governor's child processes, by component and phase.", ["component", "phase"], () => {
      const counts = new Map<string, Sample>();
      for (const c of g.children()) {
        const key = `${c.component} ${c.phase}`;
        const s = counts.get(key) ?? { labels: { component: c.component, phase: c.phase }, value: 0 };
        s.value++;
        counts.set(key, s);
      }
      return [...counts.values()];
    });
    counter(r, "nodebin_restarts_total", "Children of a component restarted (crashed, or replaced as zombies) since the governor started.", ["component"], () => g.components().map((c) => ({ labels: { component: c.name }, value: c.restarts })));
    counter(r, "nodebin_zombies_total", "Children of a component found silent past zombie-after-ms since the governor started.", ["component"], () => g.components().map((c) => ({ labels: { component: c.name }, value: c.zombies })));
    gauge(r, "nodebin_child_resident_memory_bytes", "Resident memory of a child process, at its last pong.", ["component", "pid"], () =>
      g.children().flatMap((c) => (c.stats ? [{ labels: { component: c.component, pid: c.pid }, value: c.stats.rssBytes }] : [])),
    );
    // The provider loop's (governor/provider.ts): no samples without a provider.
    const provider = () => g.provider?.();
    const byOutcome = (read: (p: ProviderSample) => Record<string, number>) => () => {
      const p = provider();
      return p ? Object.entries(read(p)).map(([outcome, value]) => ({ labels: { outcome }, value })) : [];
    };
    gauge(r, "nodebin_provider_hosts", "Hosts this governor's provider launched that are alive.", [], () => {
      const p = provider();
      return p ? [{ labels: {}, value: p.hosts }] : [];
    });
    counter(r, "nodebin_provider_unmet_total", "Capacity requests that reached the provider loop with no room anywhere in reach.", [], () => {
      const p = provider();
      return p ? [{ labels: {}, value: p.unmet }] : [];
    });
    counter(r, "nodebin_provider_launches_total", "Host launches by outcome: started (the provider was asked), succeeded (the host joined), failed.", ["outcome"], byOutcome((p) => p.launches));
    counter(r, "nodebin_provider_releases_total", "Host releases by outcome: started, succeeded, failed, gone (the host left the gossip by itself: forgotten).", ["outcome"], byOutcome((p) => p.releases));
    counter(r, "nodebin_provider_skipped_total", "Launch or release decisions a guard rail refused, by action and reason (not-decider, in-flight, max-hosts, cooldown, backoff).", ["action", "reason"], () =>
      (provider()?.skipped ?? []).map((s) => ({ labels: { action: s.action, reason: s.reason }, value: s.count })),
    );
  }
}

/** A gauge set, at each scrape, to what `read` says now. */
function gauge(registry: Registry, name: string, help: string, labelNames: string[], read: () => Sample[]): void {
  const g: Gauge = new Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      g.reset();
      for (const s of read()) g.set(s.labels, s.value);
    },
  });
}

/**
 * A counter set, at each scrape, to the total `read` says now: the totals are
 * counted where they happen (a node's stats, a child's pong, the transport),
 * this only exports them.
 */
function counter(registry: Registry, name: string, help: string, labelNames: string[], read: () => Sample[]): void {
  const c: Counter = new Counter({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      c.reset();
      for (const s of read()) c.inc(s.labels, Math.max(0, s.value));
    },
  });
}

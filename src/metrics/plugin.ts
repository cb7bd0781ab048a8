/**
 * The metrics plugin, shaped as a control-plane plugin of kind "metrics": a
 * module default-exporting `{ kind, name, create(options) }`, as the
 * governor's strategy plugins are (governor/strategy.ts), so that a plugin
 * host can load it, or a replacement of the same kind, by kind. Until there
 * is one, the roles create it themselves (cli/metrics-options.ts):
 *
 *   const metrics = prometheus.create({ role: "container", host });
 *   await metrics.serve({ host: "127.0.0.1", port: 9464 });   // GET /metrics
 *   ... interceptors: { inbound: [metrics.interceptor] } ...   // counts the calls of the process's nodes
 *   metrics.observeProcess(processView(proc));                 // queues, refusals, membership, gossip
 *   await metrics.close();
 *
 * The built-in one is Prometheus's text format from prom-client (metrics.ts).
 */
import type { InboundInterceptor } from "../component/interceptor.ts";
import type { PingReply } from "../wire/control.ts";
import { PrometheusMetrics } from "./metrics.ts";
import type { MetricsAddress } from "./server.ts";
import type { GovernorView, ProcessView } from "./sources.ts";

export type { MetricsAddress } from "./server.ts";

export interface MetricsOptions {
  /** The process's role ("governor", "container", "dev"): the `role` label of nodebin_info. */
  role: string;
  /** Its host id (nodebin_info's `host`). */
  host?: string;
  /** The node-bin version (nodebin_info's `version`). */
  version?: string;
  /** Also export prom-client's Node.js process metrics (process_*, nodejs_*). Default false. */
  processMetrics?: boolean;
  /** Upper bounds (seconds) of the call duration buckets, ascending (default CALL_BUCKETS). */
  buckets?: readonly number[];
  /** Monotonic milliseconds the calls are timed with (default performance.now). */
  now?: () => number;
}

/** What a metrics plugin gives a process. */
export interface MetricsPlugin {
  readonly kind: "metrics";
  /**
   * The inbound link that counts each message the process's nodes handle
   * (nodebin_calls_total, nodebin_call_duration_seconds), by method and
   * outcome code. Install it in the process's inbound interceptors; it
   * passes every outcome through unchanged.
   */
  readonly interceptor: InboundInterceptor;
  /** The calls counted so far, as a container's Ping reports them to its governor. */
  callStats(): Pick<PingReply, "calls" | "callBuckets">;
  /** Exports this process's series (node queues, refusals, membership, gossip) from now on. One per plugin. */
  observeProcess(view: ProcessView): void;
  /** Exports a governor's series (components, restarts, zombies, and its children's calls and queues from their pongs). One per plugin. */
  observeGovernor(view: GovernorView): void;
  /** The metrics now, in the Prometheus text format (exposition format 0.0.4). */
  collect(): Promise<string>;
  /** The Content-Type of collect()'s text. */
  readonly contentType: string;
  /**
   * Serves GET /metrics over HTTP at `address` (port 0: one the OS picks) and
   * resolves with its URL. Rejects with UNAVAILABLE when the port is in use
   * or the address is not this host's, PERMISSION_DENIED when the port needs
   * privileges; FAILED_PRECONDITION when it serves already.
   */
  serve(address: MetricsAddress): Promise<string>;
  /** Stops serving (open connections closed). Idempotent. */
  close(): Promise<void>;
}

/** A module of kind "metrics", as a plugin host loads it. */
export interface MetricsPluginModule {
  readonly kind: "metrics";
  readonly name: string;
  create(options: MetricsOptions): MetricsPlugin;
}

const prometheus: MetricsPluginModule = {
  kind: "metrics",
  name: "prometheus",
  create: (options) => new PrometheusMetrics(options),
};

export default prometheus;

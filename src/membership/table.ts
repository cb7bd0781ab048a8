/**
 * The membership table: every node a process knows of, what it serves and
 * where to reach it, plus the schemas of their components (each stored once,
 * shared by all nodes of a component). Dev mode fills it with its own nodes;
 * a client fills it from a pull; gossip will keep it current across hosts.
 */

import { nodebinRoot } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { Schema, type MethodSchema } from "../wire/schema.ts";
import type { HostSummary, NodeEntry, PullReply } from "../wire/control.ts";
import { sanitizeCapacity, sanitizeRemotes } from "./capacity.ts";

// The wire types of the table's entries live with the control protocol that carries them.
export type { NodeEntry, NodeLoad } from "../wire/control.ts";

/**
 * The endpoint to reach `entry` at from host `host`: its ipc endpoint when it
 * runs on the same host (Unix sockets: no TCP stack), else its first tcp one.
 */
export function reachableEndpoint(entry: NodeEntry, host: string): string | undefined {
  if (entry.host === host) {
    const ipc = entry.endpoints.find((e) => e.startsWith("ipc://"));
    if (ipc) return ipc;
  }
  return entry.endpoints.find((e) => !e.startsWith("ipc://")) ?? entry.endpoints[0];
}

/** A method and the nodes that serve it. */
export interface MethodRoute {
  readonly method: MethodSchema;
  readonly nodes: readonly NodeEntry[];
}

const PullReply = nodebinRoot.lookupType("nodebin.MembershipPullReply");

/** The source of this process's own nodes in a table. */
export const LOCAL = "local";

export class MembershipTable {
  // Entries grouped by where they came from (LOCAL, a container's lease, a
  // remote host's gossip record, a pulled copy): each source is replaced whole.
  private readonly sources = new Map<string, Map<string, NodeEntry>>();
  private readonly schemas = new Map<string, Schema>();
  private merged: Map<string, NodeEntry> | undefined;
  private index: Map<string, MethodRoute> | undefined;
  private readonly listeners = new Set<() => void>();
  /**
   * The hosts this process knows with what they can take (membership/capacity.ts), by host id:
   * an agent's own and its gossip's, or a pulled copy of an agent's. Not part of the node
   * table's version: capacity moves every second, and a change of it is no reason to pull the nodes again.
   */
  private readonly hosts = new Map<string, HostSummary>();
  /** Bumped on every change: lets a puller skip an unchanged table. */
  version = 1;
  /** Schemas refused (too large, an id that is not their content's, invalid), and the entries they took with them. */
  refusedSchemas = 0;

  /** Adds or replaces one of this process's own nodes. Throws FAILED_PRECONDITION when its schema is unknown. */
  upsert(entry: NodeEntry, schema?: Schema): void {
    if (schema) this.schemas.set(schema.id, schema);
    if (!this.schemas.has(entry.schema)) throw new NodeBinError("FAILED_PRECONDITION", `node ${entry.id} refers to unknown schema ${entry.schema}`);
    let local = this.sources.get(LOCAL);
    if (!local) this.sources.set(LOCAL, (local = new Map()));
    local.set(entry.id, entry);
    this.changed();
  }

  /** Removes one of this process's own nodes. */
  remove(id: string): boolean {
    const removed = this.sources.get(LOCAL)?.delete(id) ?? false;
    if (removed) this.changed();
    return removed;
  }

  /**
   * Replaces every entry of `source` (an empty list removes the source).
   * Schemas are content-addressed: one given is taken only when an entry of
   * the source uses it and its id is the hash of its content
   * (Schema.verified), parsed once and kept while some entry uses it (pruned
   * with the last). Entries whose schema is unknown or refused are skipped,
   * and counted (`refusedSchemas`); `strict` throws the refusal instead
   * (INVALID_ARGUMENT: Register answers it). Returns the number of entries kept.
   */
  setSource(source: string, entries: NodeEntry[], schemas: { id: string; json: string }[] = [], strict = false): number {
    const used = new Set(entries.map((e) => e.schema));
    for (const s of schemas) {
      if (this.schemas.has(s.id) || !used.has(s.id)) continue;
      try {
        this.schemas.set(s.id, Schema.verified(s));
      } catch (err) {
        if (strict) throw err;
        this.refusedSchemas++;
      }
    }
    const kept = entries.filter((e) => this.schemas.has(e.schema));
    const before = this.sources.get(source);
    if (kept.length === 0) {
      if (!before) return 0;
      this.sources.delete(source);
    } else {
      if (before && sameEntries(before, kept)) return kept.length;
      this.sources.set(source, new Map(kept.map((e) => [e.id, e])));
    }
    this.changed();
    return kept.length;
  }

  /**
   * Takes a pull reply as the whole of `source` (default "pull"), unless it
   * says unchanged. `endpoint` fills in endpoints of nodes that came without
   * any (reached through the process that answered). Throws INVALID_ARGUMENT
   * for a schema that does not parse. Returns the reply.
   */
  mergePull(reply: PullReply, endpoint?: string, source = "pull"): PullReply {
    for (const node of reply.nodes) {
      node.load ??= { queued: 0, capacity: 0 };
      if (node.endpoints.length === 0 && endpoint) node.endpoints = [endpoint];
    }
    if (!reply.unchanged) this.setSource(source, reply.nodes, reply.schemas, true);
    if (reply.hosts?.length) this.setHosts(reply.hosts.slice(0, MAX_PULLED_HOSTS).map(pulledHost));
    return reply;
  }

  /** Sets (or, with only its id, removes) one host's summary. */
  setHost(host: string, summary?: HostSummary): void {
    if (summary) this.hosts.set(host, summary);
    else this.hosts.delete(host);
  }

  /** Replaces every host summary (a pull's; an empty list forgets them). */
  setHosts(summaries: readonly HostSummary[]): void {
    this.hosts.clear();
    for (const h of summaries) if (h.host) this.hosts.set(h.host, h);
  }

  /** The hosts this process knows, with their capacity and the networks gateways reach (see setHost). */
  hostSummaries(): HostSummary[] {
    return [...this.hosts.values()];
  }

  /** The names of the sources that have entries. */
  sourceNames(): string[] {
    return [...this.sources.keys()];
  }

  /** The entries of one source. */
  sourceEntries(source: string): NodeEntry[] {
    return [...(this.sources.get(source)?.values() ?? [])];
  }

  /** The schema with that id, if known. */
  schema(id: string): Schema | undefined {
    return this.schemas.get(id);
  }

  get(id: string): NodeEntry | undefined {
    return this.nodes().get(id);
  }

  entries(): NodeEntry[] {
    return [...this.nodes().values()];
  }

  /** Calls `listener` after every change; returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves at the next change, or after `ms` (whichever comes first). */
  nextChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const off = this.onChange(done);
      function done() {
        clearTimeout(timer);
        off();
        resolve();
      }
    });
  }

  private nodes(): Map<string, NodeEntry> {
    if (this.merged) return this.merged;
    const merged = new Map<string, NodeEntry>();
    // This process's own entries win over copies of them that came back from elsewhere.
    for (const [id, e] of this.sources.get(LOCAL) ?? []) merged.set(id, e);
    // Then a node id belongs to the source that has claimed it longest (sources
    // keep their first position): a later source naming the same id (a forged
    // lease or host record) cannot take a live node's route over.
    for (const [name, entries] of this.sources) if (name !== LOCAL) for (const [id, e] of entries) if (!merged.has(id)) merged.set(id, e);
    return (this.merged = merged);
  }

  private changed(): void {
    this.merged = undefined;
    this.index = undefined;
    this.pruneSchemas();
    this.version = this.version >= 0xffffffff ? 1 : this.version + 1;
    for (const listener of [...this.listeners]) listener();
  }

  /** Forgets the schemas no entry of any source uses any more (a schema leaves with its last node). */
  private pruneSchemas(): void {
    if (this.schemas.size === 0) return;
    const used = new Set<string>();
    for (const entries of this.sources.values()) for (const e of entries.values()) used.add(e.schema);
    for (const id of this.schemas.keys()) if (!used.has(id)) this.schemas.delete(id);
  }

  /** How many schemas the table holds (each once, however many nodes use it). */
  get schemaCount(): number {
    return this.schemas.size;
  }

  /** Every method some node serves, by full name. Rebuilt lazily after changes. */
  routes(): ReadonlyMap<string, MethodRoute> {
    if (this.index) return this.index;
    const index = new Map<string, { method: MethodSchema; nodes: NodeEntry[] }>();
    for (const node of this.nodes().values()) {
      const schema = this.schemas.get(node.schema)!;
      for (const { name } of node.methods) {
        const method = schema.methods.get(name);
        if (!method) continue;
        let route = index.get(name);
        if (!route) index.set(name, (route = { method, nodes: [] }));
        route.nodes.push(node);
      }
    }
    this.index = index;
    return index;
  }

  /** The pull reply for this table: nodes with their schemas, each schema once; `unchanged` when the asker has this version. */
  encodePull(knownVersion = 0, self: { host?: string; network?: string } = {}): Uint8Array {
    const hosts = this.hostSummaries();
    if (knownVersion === this.version) return PullReply.encode({ version: this.version, unchanged: true, hosts, ...self }).finish();
    const nodes = this.entries();
    const used = new Set(nodes.map((n) => n.schema));
    const schemas = [...used].map((id) => ({ id, json: this.schemas.get(id)!.json }));
    return PullReply.encode({ nodes, schemas, version: this.version, hosts, ...self }).finish();
  }
}

/** The most host summaries a pulled reply may make a process hold. */
export const MAX_PULLED_HOSTS = 4096;

/** A pulled host summary, bounded as a gossiped one is (capacity.ts). */
function pulledHost(h: HostSummary): HostSummary {
  const capacity = sanitizeCapacity(h.capacity);
  const remotes = sanitizeRemotes(h.remotes);
  const text = (v: unknown) => (typeof v === "string" && v.length <= 256 ? v : "");
  return { host: text(h.host), network: text(h.network), endpoint: text(h.endpoint), ...(capacity ? { capacity } : {}), remotes, role: text(h.role) };
}

function sameEntries(a: Map<string, NodeEntry>, b: NodeEntry[]): boolean {
  if (a.size !== b.length) return false;
  for (const e of b) {
    const old = a.get(e.id);
    if (!old || old.schema !== e.schema || old.endpoints.join(" ") !== e.endpoints.join(" ") || old.load.queued !== e.load.queued || old.load.capacity !== e.load.capacity) return false;
  }
  return true;
}

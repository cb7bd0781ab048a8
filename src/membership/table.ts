/**
 * The membership table: every node a process knows of, what it serves and
 * where to reach it, plus the schemas of their components (each stored once,
 * shared by all nodes of a component). Dev mode fills it with its own nodes;
 * a client fills it from a pull; gossip will keep it current across hosts.
 */

import type protobuf from "protobufjs";
import { nodebinRoot } from "../wire/envelope.ts";
import { NodeBinError } from "../wire/errors.ts";
import { Schema, type MethodSchema, type Mode } from "../wire/schema.ts";

export interface NodeLoad {
  /** Messages waiting in the node's queue. */
  queued: number;
  /** Its queue limit. */
  capacity: number;
}

/** A node as the network knows it (mirrors nodebin.NodeEntry). */
export interface NodeEntry {
  id: string;
  component: string;
  version: string;
  host: string;
  network: string;
  /** Where to reach it; empty for nodes only reachable in-process. */
  endpoints: string[];
  methods: { name: string; mode: Mode }[];
  /** Id of its schema in the table. */
  schema: string;
  load: NodeLoad;
}

/** A method and the nodes that serve it. */
export interface MethodRoute {
  readonly method: MethodSchema;
  readonly nodes: readonly NodeEntry[];
}

const PullReply = nodebinRoot.lookupType("nodebin.MembershipPullReply");

export class MembershipTable {
  private readonly nodes = new Map<string, NodeEntry>();
  private readonly schemas = new Map<string, Schema>();
  private index: Map<string, MethodRoute> | undefined;

  /** Adds or replaces a node. Throws FAILED_PRECONDITION when its schema is unknown. */
  upsert(entry: NodeEntry, schema?: Schema): void {
    if (schema) this.schemas.set(schema.id, schema);
    if (!this.schemas.has(entry.schema)) throw new NodeBinError("FAILED_PRECONDITION", `node ${entry.id} refers to unknown schema ${entry.schema}`);
    this.nodes.set(entry.id, entry);
    this.index = undefined;
  }

  remove(id: string): boolean {
    const removed = this.nodes.delete(id);
    if (removed) this.index = undefined;
    return removed;
  }

  get(id: string): NodeEntry | undefined {
    return this.nodes.get(id);
  }

  entries(): NodeEntry[] {
    return [...this.nodes.values()];
  }

  /** Every method some node serves, by full name. Rebuilt lazily after changes. */
  routes(): ReadonlyMap<string, MethodRoute> {
    if (this.index) return this.index;
    const index = new Map<string, { method: MethodSchema; nodes: NodeEntry[] }>();
    for (const node of this.nodes.values()) {
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

  /** The pull reply for this table: nodes with their schemas, each schema once. */
  encodePull(): Uint8Array {
    const used = new Set(this.entries().map((n) => n.schema));
    const schemas = [...used].map((id) => ({ id, json: this.schemas.get(id)!.json }));
    return PullReply.encode({ nodes: this.entries(), schemas }).finish();
  }

  /**
   * Merges a pull reply (a decoded nodebin.MembershipPullReply) into this
   * table. `endpoint` fills in the endpoints of nodes that came without any
   * (reached through the process that answered). Throws INVALID_ARGUMENT for
   * a schema that does not parse.
   */
  mergePull(message: protobuf.Message, endpoint?: string): void {
    const reply = PullReply.toObject(message, { arrays: true, defaults: true }) as { nodes: NodeEntry[]; schemas: { id: string; json: string }[] };
    for (const s of reply.schemas) if (!this.schemas.has(s.id)) this.schemas.set(s.id, Schema.fromJSON(s.json));
    for (const node of reply.nodes) {
      if (!this.schemas.has(node.schema)) continue;
      this.upsert({ ...node, load: node.load ?? { queued: 0, capacity: 0 }, endpoints: node.endpoints.length || !endpoint ? node.endpoints : [endpoint] });
    }
  }
}


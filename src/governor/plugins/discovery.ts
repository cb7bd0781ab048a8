/**
 * The built-in discovery ("gossip"): the host agent's push-pull gossip from
 * the seeds (membership/gossip.ts). It makes no layer of its own: undefined
 * tells the host role to use the built-in one. A discovery plugin returns a
 * GossipLayer instead.
 */
import type { PluginModule } from "../strategy.ts";

const plugin: PluginModule<"discovery"> = {
  kind: "discovery",
  name: "gossip",
  create(options) {
    for (const key of Object.keys(options)) throw new Error(`gossip: unknown option "${key}" (it has none)`);
    return { name: "gossip", makeGossip: () => undefined };
  },
};

export default plugin;

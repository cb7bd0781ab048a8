// governor.json `gateways` (src/governor/gateways.ts parseGateways, through parseConfig): what a
// governor is told to run as gateway children, checked before anything starts.
import t from "tap";
import { parseConfig } from "../../src/governor/settings.ts";
import { parseGateways } from "../../src/governor/gateways.ts";
import { NodeBinError } from "../../src/wire/errors.ts";

const fails = (fn: () => unknown): NodeBinError => {
  try {
    fn();
  } catch (err) {
    return NodeBinError.from(err);
  }
  throw new Error("did not throw");
};

t.test("gateway config - entries are read with their fields; the rest default", async (t) => {
  const specs = parseGateways([{ remoteNetwork: "b", remoteSeeds: ["10.1.0.5", "10.1.0.6:7401"], remoteListen: "10.1.0.1" }, { name: "gw-c", network: "a", discoveryPort: 7500, remoteNetwork: "c", remoteSeeds: ["10.2.0.5"], remoteAdvertise: "10.2.0.1", remoteDiscoveryPort: 7401 }], "governor.json");
  t.same(specs, [
    { remoteNetwork: "b", remoteSeeds: ["10.1.0.5", "10.1.0.6:7401"], remoteListen: "10.1.0.1" },
    { remoteNetwork: "c", remoteSeeds: ["10.2.0.5"], name: "gw-c", network: "a", remoteAdvertise: "10.2.0.1", discoveryPort: 7500, remoteDiscoveryPort: 7401 },
  ]);
  t.same(parseConfig(JSON.stringify({ capacity: 2, gateways: [{ remoteNetwork: "b", remoteSeeds: ["10.1.0.5"] }] }), "governor.json").gateways, [{ remoteNetwork: "b", remoteSeeds: ["10.1.0.5"] }], "parseConfig takes them");
});

t.test("gateway config - a bad entry is INVALID_ARGUMENT naming the file and field", async (t) => {
  const cases: [unknown, string][] = [
    [{ remoteNetwork: "b", remoteSeeds: ["x"] }, "gateways"],
    [[{ remoteNetwork: "b" }], "gateways[0].remoteSeeds"],
    [[{ remoteSeeds: ["x"] }], "gateways[0].remoteNetwork"],
    [[{ remoteNetwork: "b", remoteSeeds: [] }], "gateways[0].remoteSeeds"],
    [[{ remoteNetwork: "b", remoteSeeds: ["x"], remoteDiscoveryPort: 70000 }], "gateways[0].remoteDiscoveryPort"],
    [[{ remoteNetwork: "b", remoteSeeds: ["x"], listen: "0.0.0.0" }], "gateways[0].listen"],
    [[{ remoteNetwork: "has space", remoteSeeds: ["x"] }], "gateways[0].remoteNetwork"],
    [[{ remoteNetwork: "b/c", remoteSeeds: ["x"] }], "gateways[0].remoteNetwork"],
    [[{ remoteNetwork: "b", remoteSeeds: ["x"], remoteClusterKey: "" }], "gateways[0].remoteClusterKey"],
    [[{ remoteNetwork: "b", remoteSeeds: ["x"], remoteClusterKey: 7 }], "gateways[0].remoteClusterKey"],
    [[{ remoteNetwork: "b", network: "a:1", remoteSeeds: ["x"] }], "gateways[0].network"],
    [Array.from({ length: 17 }, () => ({ remoteNetwork: "b", remoteSeeds: ["x"] })), "gateways"],
  ];
  // The remote network's own key: a path relative to the config file's directory, passed on to the gateway.
  t.same(parseGateways([{ remoteNetwork: "b", remoteSeeds: ["x"], remoteClusterKey: "keys/b.key" }], "/etc/node-bin/governor.json")[0]!.remoteClusterKey, "/etc/node-bin/keys/b.key", "remoteClusterKey is resolved against the config file's directory");
  t.same(parseGateways([{ remoteNetwork: "b", remoteSeeds: ["x"], remoteClusterKey: "/k/b.key" }], "governor.json")[0]!.remoteClusterKey, "/k/b.key", "an absolute one is kept");
  // "default" is the default network's name as people write it: the empty name, as --network takes it.
  t.same(parseGateways([{ network: "b", remoteNetwork: "default", remoteSeeds: ["x"] }], "governor.json"), [{ network: "b", remoteNetwork: "", remoteSeeds: ["x"] }], "remoteNetwork default is the default network");
  for (const [value, field] of cases) {
    const err = fails(() => parseConfig(JSON.stringify({ gateways: value }), "/etc/governor.json"));
    t.equal(err.code, "INVALID_ARGUMENT", `${JSON.stringify(value).slice(0, 60)}: INVALID_ARGUMENT`);
    t.equal(err.details.field, field, `names ${field}`);
    t.equal(err.details.file, "/etc/governor.json");
  }
});

import t from "tap";
import { Client } from "../../src/client/client.ts";
import { NodeBinError } from "../../src/wire/errors.ts";

t.test("client - an endpoint that is not tcp://HOST:PORT or ipc://PATH is INVALID_ARGUMENT, before anything connects", async (t) => {
  for (const endpoint of ["tcp://10.0.0.5", "10.0.0.5:7400", "http://x:1", "tcp://:7400", "ipc://", "tcp://host:port"]) {
    const err = await Client.connect({ endpoint, connectTimeoutMs: 200 }).then(
      () => undefined,
      (e: unknown) => NodeBinError.from(e),
    );
    t.equal(err?.code, "INVALID_ARGUMENT", `${endpoint}: ${err?.message}`);
  }
  const unreachable = await Client.connect({ endpoint: "tcp://127.0.0.1:1", connectTimeoutMs: 200 }).then(
    () => undefined,
    (e: unknown) => NodeBinError.from(e),
  );
  t.equal(unreachable?.code, "UNAVAILABLE", "a well-formed endpoint nobody answers at is UNAVAILABLE");
  const ipv6 = await Client.connect({ endpoint: "tcp://[::1]:1", connectTimeoutMs: 200 }).then(
    () => undefined,
    (e: unknown) => NodeBinError.from(e),
  );
  t.equal(ipv6?.code, "UNAVAILABLE", "an IPv6 endpoint is well-formed");
});

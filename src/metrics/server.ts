/**
 * The /metrics endpoint: a plain HTTP server (node:http) bound where it is
 * asked, answering GET (and HEAD) /metrics with what it is given to collect
 * at each request; anything else is 404 or 405. The OS's reasons for not
 * binding become coded errors here, at the edge, with their cause kept.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { isIPv6 } from "node:net";
import { NodeBinError } from "../wire/errors.ts";

/** Where to serve: an IP address of this host (or a wildcard) and a port (0: one the OS picks). */
export interface MetricsAddress {
  host: string;
  port: number;
}

/** What one scrape answers with. */
export type Collect = () => Promise<{ contentType: string; body: string }>;

export class MetricsServer {
  private constructor(
    private readonly server: Server,
    /** http://HOST:PORT/metrics, the port as bound. */
    readonly url: string,
  ) {}

  /**
   * Binds `address` and serves `collect` at /metrics. Rejects with
   * UNAVAILABLE (the port is in use, or the address is not this host's),
   * PERMISSION_DENIED (a port that needs privileges) or INVALID_ARGUMENT.
   */
  static listen(address: MetricsAddress, collect: Collect): Promise<MetricsServer> {
    const server = createServer((req, res) => void answer(req, res, collect));
    // A scraper that opens a connection and sends nothing must not hold it forever.
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    return new Promise((resolve, reject) => {
      const failed = (err: NodeJS.ErrnoException) => reject(bindError(address, err));
      server.once("error", failed);
      server.listen({ host: address.host, port: address.port }, () => {
        server.off("error", failed);
        const bound = server.address();
        const port = typeof bound === "object" && bound ? bound.port : address.port;
        const host = isIPv6(address.host) ? `[${address.host}]` : address.host;
        resolve(new MetricsServer(server, `http://${host}:${port}/metrics`));
      });
    });
  }

  /** Stops listening and closes the connections still open (a scraper's keep-alive included). */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      // Not every runtime's node:http has it (Deno's compatibility layer may not).
      this.server.closeAllConnections?.();
    });
  }
}

async function answer(req: IncomingMessage, res: ServerResponse, collect: Collect): Promise<void> {
  const path = (req.url ?? "/").split("?")[0];
  if (path !== "/metrics") return reply(res, 404, "not found: the metrics are at /metrics\n");
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    return reply(res, 405, "method not allowed: GET /metrics\n");
  }
  let scraped: { contentType: string; body: string };
  try {
    scraped = await collect();
  } catch (err) {
    return reply(res, 500, `cannot collect the metrics: ${NodeBinError.from(err).message}\n`);
  }
  res.writeHead(200, { "Content-Type": scraped.contentType, "Content-Length": Buffer.byteLength(scraped.body) });
  res.end(req.method === "HEAD" ? undefined : scraped.body);
}

function reply(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

/** The OS's reason for not binding, as the coded error the process exits with. */
function bindError(address: MetricsAddress, err: NodeJS.ErrnoException): NodeBinError {
  const where = `${isIPv6(address.host) ? `[${address.host}]` : address.host}:${address.port}`;
  const details = { address: where, errno: err.code ?? "" };
  switch (err.code) {
    case "EADDRINUSE":
      return new NodeBinError("UNAVAILABLE", `cannot serve metrics at ${where}: the port is in use (give --metrics another port, or 0 for one the OS picks)`, { details, cause: err });
    case "EADDRNOTAVAIL":
      return new NodeBinError("UNAVAILABLE", `cannot serve metrics at ${where}: not an address of this host`, { details, cause: err });
    case "EACCES":
      return new NodeBinError("PERMISSION_DENIED", `cannot serve metrics at ${where}: the port needs privileges (use one above 1023)`, { details, cause: err });
    default:
      return new NodeBinError("UNAVAILABLE", `cannot serve metrics at ${where}: ${err.message}`, { details, cause: err });
  }
}

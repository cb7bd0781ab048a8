/**
 * The raw node:net echo of bench/run.ts, the floor of what two Node processes
 * on this machine can do: frames are a 4-byte big-endian length and a
 * payload; every complete frame is sent straight back. The complete frames of
 * one read go back in one write (what any decent server does). Prints
 * `net echo ready at <port>`; SIGTERM or SIGINT closes it.
 *
 *   node --import ./bin/register.mjs bench/lib/net-echo.ts
 */
import { createServer, type Socket } from "node:net";

const sockets = new Set<Socket>();
const server = createServer((socket) => {
  sockets.add(socket);
  socket.setNoDelay(true);
  let pending: Buffer | undefined;
  socket.on("data", (chunk: Buffer) => {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    let end = 0;
    while (buf.length - end >= 4) {
      const next = end + 4 + buf.readUInt32BE(end);
      if (next > buf.length) break;
      end = next;
    }
    if (end > 0) socket.write(end === buf.length ? buf : buf.subarray(0, end));
    pending = end === buf.length ? undefined : Buffer.from(buf.subarray(end));
  });
  socket.on("error", () => {});
  socket.on("close", () => sockets.delete(socket));
});
server.listen({ port: 0, host: "127.0.0.1" }, () => {
  const address = server.address();
  process.stdout.write(`net echo ready at ${typeof address === "object" && address ? address.port : "?"}\n`);
});

const stop = () => {
  for (const s of sockets) s.destroy();
  server.close(() => process.exit(0));
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);

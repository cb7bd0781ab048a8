/**
 * Preloaded into every server process of bench/run.ts
 * (`node --import ./bin/register.mjs --import ./bench/lib/probe.ts ...`),
 * `node-bin container` included, without touching its code: answers the
 * driver's `cpu` request with this process's process.cpuUsage() (user +
 * system µs, every thread: libzmq's I/O threads too) and RSS, over the IPC
 * channel the driver opened. Also makes the process end with its driver.
 */
import { cpuAndRss, serveIpc } from "./ipc.ts";

serveIpc({ cpu: () => cpuAndRss() });

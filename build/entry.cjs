// The entry point of the bundle (dist/node-bin.cjs) and so of the single
// executable: build.mjs bundles this file and everything it requires. It is
// CommonJS so that loading the CLI (which loads zeromq's native addon and the
// nodebin protos, both written to the cache directory inside the executable)
// happens inside the try below, where an unusable cache directory becomes one
// clear line instead of a stack trace.
"use strict";

let cli;
try {
  cli = require("../src/cli/main.ts");
} catch (err) {
  if (err && err.code === "NODEBIN_CACHE_DIR") {
    process.stderr.write(`error: FAILED_PRECONDITION: ${err.message}\n`);
    process.exit(9); // the CLI's exit status for FAILED_PRECONDITION
  }
  throw err;
}
// Inside the executable argv is [executable, what the user typed, ...args]; for `node dist/node-bin.cjs` it is [node, script, ...args].
cli.main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});

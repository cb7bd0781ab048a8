/** The version every subcommand prints for --version (from package.json, bundled with the build). */
import pkg from "../../package.json" with { type: "json" };

export const VERSION: string = pkg.version;

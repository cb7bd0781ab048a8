/**
 * The built-in component loader ("default-loader"): component/loader.ts, a
 * directory per component with its .proto files and an index module. A
 * loader plugin replaces it (`--loader PATH`, or a loader in the plugins
 * directory): it gets the components directory and returns the components
 * with the errors of those that failed, as this one does.
 */
import { loadComponents } from "../../component/loader.ts";
import type { PluginModule } from "../strategy.ts";

const plugin: PluginModule<"loader"> = {
  kind: "loader",
  name: "default-loader",
  create(options) {
    for (const key of Object.keys(options)) throw new Error(`default-loader: unknown option "${key}" (it has none)`);
    return { name: "default-loader", load: (dir) => loadComponents(dir) };
  },
};

export default plugin;

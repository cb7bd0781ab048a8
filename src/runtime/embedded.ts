/**
 * Files the build embeds in the bundle. From source this module is what you
 * see: nothing is embedded and the files are read from the checkout.
 * build/build.mjs replaces this module's contents in the bundle (an esbuild
 * plugin) with the nodebin/*.proto files as strings and the hash that keys
 * their directory in the cache.
 */
export interface EmbeddedFiles {
  /** sha256 (hex) over the files, names included: keys their cache directory. */
  readonly sha256: string;
  /** Relative path (e.g. "nodebin/options.proto") to contents. */
  readonly files: Readonly<Record<string, string>>;
}

export const EMBEDDED_PROTOS: EmbeddedFiles | undefined = undefined;

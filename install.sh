#!/usr/bin/env sh
# install.sh: puts `node-bin` on this host.
#
# Today (until the single-executable packaging lands) it installs FROM THIS
# SOURCE CHECKOUT: it checks Node.js >= 20.10, installs the npm dependencies
# (npm ci) and links a `node-bin` launcher into /usr/local/bin (root) or
# ~/.local/bin (others), or --prefix DIR. Idempotent; --uninstall removes the
# launcher it wrote (and nothing else).
#
# Later it will install the self-contained executable for this OS/arch from a
# local file or a URL, create the components directory beside it, optionally
# write a systemd unit for `node-bin governor --seed ...`, and print the next
# command to run.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=""
uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix takes a directory}; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 64 ;;
  esac
done
if [ -z "$prefix" ]; then
  if [ "$(id -u)" = 0 ]; then prefix=/usr/local/bin; else prefix="$HOME/.local/bin"; fi
fi
target="$prefix/node-bin"
marker="# installed by node-bin install.sh from $here"

if [ "$uninstall" = 1 ]; then
  if [ -f "$target" ] && grep -qF "$marker" "$target"; then rm -f "$target"; echo "removed $target"; else echo "nothing to remove at $target"; fi
  exit 0
fi

command -v node >/dev/null 2>&1 || { echo "install.sh: Node.js >= 20.10 is needed (not found)" >&2; exit 1; }
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=10)?0:1)' ||
  { echo "install.sh: Node.js >= 20.10 is needed, found $(node --version)" >&2; exit 1; }
if [ ! -d "$here/node_modules/zeromq" ]; then (cd "$here" && npm ci --no-audit --no-fund); fi

mkdir -p "$prefix"
if [ -e "$target" ] && ! grep -qF "$marker" "$target" 2>/dev/null; then
  echo "install.sh: $target exists and was not written by this script; remove it or pass --prefix" >&2
  exit 1
fi
cat > "$target.tmp" <<LAUNCHER
#!/usr/bin/env sh
$marker
exec node "$here/bin/node-bin" "\$@"
LAUNCHER
chmod 755 "$target.tmp"
mv "$target.tmp" "$target"
echo "installed $target -> $here/bin/node-bin"
case ":$PATH:" in *":$prefix:"*) ;; *) echo "note: $prefix is not on your PATH" ;; esac
echo "next: node-bin dev --components $here/examples/components   (then, in another shell: node-bin client list)"

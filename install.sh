#!/usr/bin/env bash
# install.sh: installs the node-bin executable on this host.
#
#   ./install.sh [--from FILE | --url URL [--sha256 HEX]] [--prefix DIR]
#                [--systemd [--seed IP[:PORT],...] [--listen IP] [--systemd-dir DIR]]
#   ./install.sh --uninstall [--prefix DIR]
#
# The executable for this OS and CPU (node-bin-<os>-<arch>: from --from, from
# --url (curl or wget), else beside this script or in its dist/) goes to
# PREFIX/lib/node-bin/node-bin, with a symlink PREFIX/bin/node-bin, and its
# components directory is PREFIX/lib/node-bin/components: the executable looks
# for components/ beside its real location. PREFIX is /usr/local for root,
# ~/.local otherwise. --systemd writes a unit running `node-bin governor`
# (with --seed and --listen when given) into --systemd-dir (default
# /etc/systemd/system for root, ~/.config/systemd/user otherwise); it never
# runs systemctl, it prints the command. Idempotent: run it again to upgrade.
# Everything it creates is listed in PREFIX/lib/node-bin/.install-manifest;
# --uninstall removes exactly that (a components directory that is not empty
# is kept and reported).
set -euo pipefail

UNIT_NAME=node-bin-governor.service
MARKER="# installed by node-bin install.sh"

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

here=$(cd "$(dirname "$0")" && pwd)
from="" url="" sha="" prefix="" systemd=0 seed="" listen="" systemd_dir="" uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --from) from=${2:?--from takes a file}; shift 2 ;;
    --url) url=${2:?--url takes a URL}; shift 2 ;;
    --sha256) sha=${2:?--sha256 takes a hex digest}; shift 2 ;;
    --prefix) prefix=${2:?--prefix takes a directory}; shift 2 ;;
    --systemd) systemd=1; shift ;;
    --seed) seed=${2:?--seed takes IP[:PORT],...}; shift 2 ;;
    --listen) listen=${2:?--listen takes an IP}; shift 2 ;;
    --systemd-dir) systemd_dir=${2:?--systemd-dir takes a directory}; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 64 ;;
  esac
done
[ -n "$from" ] && [ -n "$url" ] && { echo "install.sh: --from and --url exclude each other" >&2; exit 64; }
if [ "$systemd" = 0 ] && { [ -n "$seed" ] || [ -n "$listen" ] || [ -n "$systemd_dir" ]; }; then
  echo "install.sh: --seed, --listen and --systemd-dir go with --systemd" >&2; exit 64
fi

root=0; [ "$(id -u)" = 0 ] && root=1
if [ -z "$prefix" ]; then
  if [ "$root" = 1 ]; then prefix=/usr/local; else prefix="$HOME/.local"; fi
fi
case "$prefix" in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac
bin_dir="$prefix/bin"
lib_dir="$prefix/lib/node-bin"
exe="$lib_dir/node-bin"
link="$bin_dir/node-bin"
components="$lib_dir/components"
manifest="$lib_dir/.install-manifest"

# ------------------------------------------------------------------ uninstall
if [ "$uninstall" = 1 ]; then
  [ -f "$manifest" ] || { echo "nothing to remove: no $manifest"; exit 0; }
  entries=()
  while IFS= read -r line; do entries+=("$line"); done < "$manifest"
  rm -f "$manifest"
  # Last created, first removed: files and links, then directories (only when empty).
  for ((i = ${#entries[@]} - 1; i >= 0; i--)); do
    kind=${entries[$i]%%$'\t'*}
    path=${entries[$i]#*$'\t'}
    case "$kind" in
      link) if [ -L "$path" ]; then rm -f "$path"; echo "removed $path"; fi ;;
      file) if [ -f "$path" ]; then rm -f "$path"; echo "removed $path"; fi ;;
      unit)
        if [ -f "$path" ] && grep -qF "$MARKER" "$path"; then
          rm -f "$path"; echo "removed $path"
          case "$path" in
            "$HOME"/*) echo "note: if the unit was enabled: systemctl --user disable --now $UNIT_NAME; systemctl --user daemon-reload" ;;
            *) echo "note: if the unit was enabled: systemctl disable --now $UNIT_NAME; systemctl daemon-reload" ;;
          esac
        fi ;;
      dir)
        if [ -d "$path" ]; then
          if rmdir "$path" 2>/dev/null; then echo "removed $path/"; else echo "kept $path/ (not empty)"; fi
        fi ;;
    esac
  done
  exit 0
fi

# -------------------------------------------------------------------- install
case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *) die "no node-bin executable for $(uname -s) (on Windows, use node-bin-win-x64.exe as is)" ;;
esac
case "$(uname -m)" in
  x86_64|amd64) arch=x64 ;;
  aarch64|arm64) arch=arm64 ;;
  *) die "no node-bin executable for CPU $(uname -m)" ;;
esac
name="node-bin-$os-$arch"

# Records what this run creates, on top of what earlier runs created.
records=()
if [ -f "$manifest" ]; then while IFS= read -r line; do records+=("$line"); done < "$manifest"; fi
record() {
  local entry="$1"$'\t'"$2" r
  for r in ${records[@]+"${records[@]}"}; do [ "$r" = "$entry" ] && return 0; done
  records+=("$entry")
}
# mkdir -p that records each directory it creates.
make_dir() {
  local dir="$1" missing=()
  while [ ! -d "$dir" ]; do missing=("$dir" ${missing[@]+"${missing[@]}"}); dir=$(dirname "$dir"); done
  local d
  for d in ${missing[@]+"${missing[@]}"}; do mkdir "$d"; record dir "$d"; done
}
save_manifest() {
  printf '%s\n' "${records[@]}" > "$manifest.tmp"
  mv -f "$manifest.tmp" "$manifest"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The executable to install.
if [ -n "$url" ]; then
  src="$work/$name"
  echo "downloading $url"
  if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 3 -o "$src" "$url" || die "download failed: $url"
  elif command -v wget >/dev/null 2>&1; then wget -q -O "$src" "$url" || die "download failed: $url"
  else die "neither curl nor wget is installed: download $url yourself and pass --from FILE"; fi
elif [ -n "$from" ]; then
  src="$from"
else
  src=""
  for candidate in "$here/$name" "$here/dist/$name"; do
    if [ -f "$candidate" ]; then src="$candidate"; break; fi
  done
  [ -n "$src" ] || die "no $name beside install.sh or in its dist/: pass --from FILE or --url URL (npm run build makes dist/$name)"
fi
[ -f "$src" ] || die "$src: no such file"
if [ -n "$sha" ]; then
  if command -v sha256sum >/dev/null 2>&1; then actual=$(sha256sum "$src" | cut -d' ' -f1); else actual=$(shasum -a 256 "$src" | cut -d' ' -f1); fi
  [ "$actual" = "$sha" ] || die "$src: sha256 is $actual, expected $sha"
fi

# It must run here (right OS and CPU; on macOS it must be signed). A throw-away
# cache directory keeps this check from leaving files behind.
cp "$src" "$work/check" && chmod 755 "$work/check"
version=$(NODEBIN_CACHE_DIR="$work/cache" "$work/check" --version 2>"$work/check.err") ||
  die "$src does not run on this host ($os-$arch): $(head -n 3 "$work/check.err")"

# Refuse to overwrite a node-bin this script did not install (the launcher of
# older install.sh versions, which ran node-bin from a checkout, is replaced).
if [ -e "$link" ] || [ -L "$link" ]; then
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$exe" ]; then :
  elif [ -f "$link" ] && ! [ -L "$link" ] && grep -qF "# installed by node-bin install.sh from" "$link" 2>/dev/null; then rm -f "$link"
  else die "$link exists and was not installed by this script: remove it or pass --prefix"
  fi
fi

make_dir "$lib_dir"
make_dir "$bin_dir"
make_dir "$components"
# Replace the executable atomically: running governors keep their (old) file.
cp "$src" "$exe.tmp.$$"
chmod 755 "$exe.tmp.$$"
mv -f "$exe.tmp.$$" "$exe"
record file "$exe"
ln -sfn "$exe" "$link"
record link "$link"
save_manifest

unit=""
if [ "$systemd" = 1 ]; then
  if [ -z "$systemd_dir" ]; then
    if [ "$root" = 1 ]; then systemd_dir=/etc/systemd/system; else systemd_dir="$HOME/.config/systemd/user"; fi
  fi
  if [ "$root" = 1 ] && [ "$systemd_dir" = /etc/systemd/system ]; then wanted=multi-user.target; ctl="systemctl"
  elif [ "$root" = 0 ] && [ "$systemd_dir" = "$HOME/.config/systemd/user" ]; then wanted=default.target; ctl="systemctl --user"
  elif [ "$root" = 1 ]; then wanted=multi-user.target; ctl="systemctl"
  else wanted=default.target; ctl="systemctl --user"; fi
  unit="$systemd_dir/$UNIT_NAME"
  if [ -f "$unit" ] && ! grep -qF "$MARKER" "$unit"; then die "$unit exists and was not written by this script"; fi
  args="governor --components $components"
  [ -n "$seed" ] && args="$args --seed $seed"
  [ -n "$listen" ] && args="$args --listen $listen"
  make_dir "$systemd_dir"
  cat > "$unit.tmp" <<UNIT
$MARKER (manifest: $manifest)
[Unit]
Description=node-bin governor: the components of $components
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=$exe $args
# Sockets in %t/node-bin (kept across restarts, so children outlive a recycled
# governor), the native addon and protos in %C/node-bin. Commands run on this
# host reach the governor with NODEBIN_RUNTIME_DIR=%t/node-bin.
RuntimeDirectory=node-bin
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
CacheDirectory=node-bin
Environment=NODEBIN_RUNTIME_DIR=%t/node-bin
Environment=NODEBIN_CACHE_DIR=%C/node-bin
# SIGTERM goes to the governor alone: it drains and stops its children itself,
# and \`node-bin governor stop --keep-children\` recycles it (Restart brings it
# back; it adopts the children).
KillMode=process
Restart=always
RestartSec=2

[Install]
WantedBy=$wanted
UNIT
  mv -f "$unit.tmp" "$unit"
  record unit "$unit"
  save_manifest
fi

echo "installed node-bin $version: $link -> $exe"
echo "components: $components (one directory per component; or: node-bin deploy SRC_DIR)"
case ":$PATH:" in *":$bin_dir:"*) cmd=node-bin ;; *) cmd="$link"; echo "note: $bin_dir is not on your PATH" ;; esac
if [ -n "$unit" ]; then
  echo "systemd unit: $unit"
  echo "next: $ctl daemon-reload && $ctl enable --now $UNIT_NAME"
  if [ "$root" = 1 ]; then echo "then: NODEBIN_RUNTIME_DIR=/run/node-bin $cmd governor status"; else echo "then: $cmd governor status"; fi
else
  echo "next: $cmd governor --seed IP   (IP: a host already running one; none on the first host. To try components out: $cmd dev)"
fi

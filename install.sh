#!/usr/bin/env bash
# install.sh: installs the node-bin executable on this host.
#
#   ./install.sh [--from FILE | --url URL [--sha256 HEX]] [--prefix DIR]
#                [--cluster-key FILE]
#                [--systemd [--seed HOST[:PORT],...] [--listen IP] [--user NAME]
#                           [--systemd-dir DIR]]
#   ./install.sh --uninstall [--prefix DIR]
#
# The executable for this OS and CPU (node-bin-<os>-<arch>: from --from, from
# --url (curl or wget), else beside this script or in its dist/) goes to
# PREFIX/lib/node-bin/node-bin, with a symlink PREFIX/bin/node-bin, and its
# components directory is PREFIX/lib/node-bin/components: the executable looks
# for components/ beside its real location. --cluster-key FILE (made by
# `node-bin keygen FILE`) is copied to PREFIX/lib/node-bin/cluster.key, mode
# 0600 (owned by the service user under --systemd as root): every node-bin
# run from there uses it, so tcp binds every interface, CurveZMQ secured;
# without one, a governor binds loopback only. PREFIX is /usr/local for root,
# ~/.local otherwise. --systemd writes a unit running `node-bin governor`
# (with --seed and --listen when given) into --systemd-dir (default
# /etc/systemd/system for root, ~/.config/systemd/user otherwise); it never
# runs systemctl, it prints the command. Written by root, the unit runs the
# governor as the system user --user (default node-bin), sandboxed; the user
# is created (useradd --system) when missing, but only when the unit goes to
# /etc/systemd/system: a unit written elsewhere (a test, an image being
# built) leaves the system's users alone and says how to create it. A user
# unit runs as its user. Every value is checked before anything is written
# (exit status 64 naming the flag). Idempotent: run it again to upgrade.
# Everything it creates is listed in PREFIX/lib/node-bin/.install-manifest;
# --uninstall removes exactly that (a components directory that is not empty
# is kept and reported).
set -euo pipefail
# Whatever the caller's umask, what is installed must be readable by the
# service user the unit runs as.
umask 022

UNIT_NAME=node-bin-governor.service
MARKER="# installed by node-bin install.sh"

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
bad() { echo "install.sh: $*" >&2; exit 64; }

here=$(cd "$(dirname "$0")" && pwd)
from="" url="" sha="" prefix="" cluster_key="" systemd=0 seed="" listen="" systemd_dir="" user="" uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --from) from=${2:?--from takes a file}; shift 2 ;;
    --url) url=${2:?--url takes a URL}; shift 2 ;;
    --sha256) sha=${2:?--sha256 takes a hex digest}; shift 2 ;;
    --prefix) prefix=${2:?--prefix takes a directory}; shift 2 ;;
    --cluster-key) cluster_key=${2:?--cluster-key takes a key file}; shift 2 ;;
    --systemd) systemd=1; shift ;;
    --seed) seed=${2:?--seed takes IP[:PORT],...}; shift 2 ;;
    --listen) listen=${2:?--listen takes an IP}; shift 2 ;;
    --user) user=${2:?--user takes a user name}; shift 2 ;;
    --systemd-dir) systemd_dir=${2:?--systemd-dir takes a directory}; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 64 ;;
  esac
done
[ -n "$from" ] && [ -n "$url" ] && { echo "install.sh: --from and --url exclude each other" >&2; exit 64; }
if [ "$systemd" = 0 ] && { [ -n "$seed" ] || [ -n "$listen" ] || [ -n "$systemd_dir" ] || [ -n "$user" ]; }; then
  echo "install.sh: --seed, --listen, --user and --systemd-dir go with --systemd" >&2; exit 64
fi

root=0; [ "$(id -u)" = 0 ] && root=1

# ------------------------------------------------------------ input checks
# Values end up in the unit file (where a newline starts a new directive, "%"
# is a specifier, "$" expands a variable, spaces and quotes split or join
# arguments and ";" separated commands in old systemd versions) and in the
# manifest (one "kind<TAB>path" a line, which --uninstall removes): each is
# checked against what it may be, before anything is written.
has_ctl() { case "$1" in *[[:cntrl:]]*) return 0 ;; *) return 1 ;; esac; }
check_seed() {
  local item port rest="$1,"
  [ -n "$1" ] || bad "--seed: empty"
  while [ -n "$rest" ]; do
    item=${rest%%,*}; rest=${rest#*,}
    [[ $item =~ ^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:([0-9]{1,5}))?$ ]] ||
      bad "--seed takes HOST[:PORT],... (an IPv4 address, [IPv6] or host name, an optional port, comma-separated), got $(printf '%q' "$item")"
    port=${BASH_REMATCH[4]}
    if [ -n "$port" ] && { [ "$((10#$port))" -lt 1 ] || [ "$((10#$port))" -gt 65535 ]; }; then bad "--seed: port $port of $item is not 1-65535"; fi
  done
}
check_listen() {
  local v="$1" o
  if [[ $v =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]]; then
    for o in "${BASH_REMATCH[@]:1}"; do [ "$((10#$o))" -le 255 ] || bad "--listen takes an IP address, got $(printf '%q' "$v")"; done
  elif ! [[ $v =~ ^[0-9A-Fa-f:.]{2,45}$ && $v == *:* ]]; then
    bad "--listen takes an IP address of this host (0.0.0.0: every interface), got $(printf '%q' "$v")"
  fi
}
# An absolute path (a relative one is taken from the working directory); with
# `unit`, also one the unit file can hold as it is.
check_path() {
  local flag="$1" path="$2" unit="$3"
  has_ctl "$path" && bad "$flag: the path holds a control character (a newline?): $(printf '%q' "$path")"
  case "$path" in /*) ;; *) bad "$flag: not an absolute path: $path" ;; esac
  if [ "$unit" = 1 ] && ! [[ $path =~ ^/[A-Za-z0-9._/+@,=:~-]*$ ]]; then
    bad "$flag: $path goes into the systemd unit, so it may hold only letters, digits and ._/+@,=:~- (no spaces, quotes, \\, \$, % or ;)"
  fi
}
for pair in "--from:$from" "--url:$url"; do has_ctl "${pair#*:}" && bad "${pair%%:*}: the value holds a control character (a newline?)"; done
if [ -n "$url" ] && ! [[ $url =~ ^(https?|file)://[^[:space:]]+$ ]]; then bad "--url takes an http://, https:// or file:// URL, got $(printf '%q' "$url")"; fi
if [ -n "$sha" ] && ! [[ $sha =~ ^[0-9A-Fa-f]{64}$ ]]; then bad "--sha256 takes 64 hex digits, got $(printf '%q' "$sha")"; fi
[ -n "$seed" ] && check_seed "$seed"
if [ -n "$cluster_key" ]; then
  has_ctl "$cluster_key" && bad "--cluster-key: the path holds a control character (a newline?): $(printf '%q' "$cluster_key")"
  [ -f "$cluster_key" ] && [ -r "$cluster_key" ] || bad "--cluster-key: no readable file $(printf '%q' "$cluster_key") (make one with: node-bin keygen FILE)"
  # Only key lines and comments: the same check node-bin makes, so a wrong file fails here, not at start.
  grep -Evq '^[[:space:]]*(#.*)?$|^[[:space:]]*nodebin-key-v1:[A-Za-z0-9_-]{43}[[:space:]]*$' "$cluster_key" &&
    bad "--cluster-key: $(printf '%q' "$cluster_key") is not a node-bin key file (lines of nodebin-key-v1:..., made by node-bin keygen)"
  grep -Eq '^[[:space:]]*nodebin-key-v1:' "$cluster_key" || bad "--cluster-key: $(printf '%q' "$cluster_key") holds no key"
fi
[ -n "$listen" ] && check_listen "$listen"
if [ -n "$user" ]; then
  [ "$root" = 1 ] || bad "--user: only root writes a system unit that runs as another user; a user unit runs as you"
  [[ $user =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || bad "--user takes a user name (lower-case letters, digits, _ and -, at most 32), got $(printf '%q' "$user")"
  [ "$user" != root ] || bad "--user root: the governor and its components would run as root; name an unprivileged user (or leave --user out: node-bin)"
fi
if [ -z "$prefix" ]; then
  if [ "$root" = 1 ]; then prefix=/usr/local; else prefix="$HOME/.local"; fi
fi
has_ctl "$prefix" && bad "--prefix: the path holds a control character (a newline?): $(printf '%q' "$prefix")"
case "$prefix" in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac
check_path --prefix "$prefix" "$systemd"
if [ -n "$systemd_dir" ]; then
  has_ctl "$systemd_dir" && bad "--systemd-dir: the path holds a control character (a newline?): $(printf '%q' "$systemd_dir")"
  case "$systemd_dir" in /*) ;; *) systemd_dir="$(pwd)/$systemd_dir" ;; esac
  check_path --systemd-dir "$systemd_dir" 0
fi
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
      user) echo "kept the system user $path (userdel $path removes it)" ;;
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
if [ -n "$cluster_key" ]; then
  # Written whole with its final mode before it takes the name: never readable by others, not even for a moment.
  (umask 077 && cp "$cluster_key" "$lib_dir/cluster.key.tmp.$$")
  chmod 600 "$lib_dir/cluster.key.tmp.$$"
  mv -f "$lib_dir/cluster.key.tmp.$$" "$lib_dir/cluster.key"
  record file "$lib_dir/cluster.key"
  echo "cluster key: $lib_dir/cluster.key (mode 0600)"
fi
save_manifest

unit=""
service_user=""
if [ "$systemd" = 1 ]; then
  if [ -z "$systemd_dir" ]; then
    if [ "$root" = 1 ]; then systemd_dir=/etc/systemd/system; else systemd_dir="$HOME/.config/systemd/user"; fi
  fi
  if [ "$root" = 1 ] && [ "$systemd_dir" = /etc/systemd/system ]; then wanted=multi-user.target; ctl="systemctl"
  elif [ "$root" = 0 ] && [ "$systemd_dir" = "$HOME/.config/systemd/user" ]; then wanted=default.target; ctl="systemctl --user"
  elif [ "$root" = 1 ]; then wanted=multi-user.target; ctl="systemctl"
  else wanted=default.target; ctl="systemctl --user"; fi
  unit="$systemd_dir/$UNIT_NAME"
  if [ -f "$unit" ] && ! [ -L "$unit" ] && ! grep -qF "$MARKER" "$unit"; then die "$unit exists and was not written by this script"; fi
  [ -L "$unit" ] && die "$unit is a symbolic link: remove it (this script writes a file there)"
  args="governor --components $components"
  [ -n "$seed" ] && args="$args --seed $seed"
  [ -n "$listen" ] && args="$args --listen $listen"

  # Root writes a system unit: the governor runs as an unprivileged system
  # user. The user is created only for a unit in /etc/systemd/system, the one
  # systemd will run: under another --systemd-dir (a test, an image) the
  # system's users are left alone.
  if [ "$root" = 1 ]; then
    service_user=${user:-node-bin}
    if ! id -u "$service_user" >/dev/null 2>&1; then
      nologin=""
      for s in /usr/sbin/nologin /sbin/nologin /usr/bin/false /bin/false; do if [ -x "$s" ]; then nologin=$s; break; fi; done
      add_user=(useradd --system --user-group --no-create-home --home-dir /var/lib/node-bin --shell "${nologin:-/bin/false}" "$service_user")
      if [ "$systemd_dir" = /etc/systemd/system ]; then
        command -v useradd >/dev/null 2>&1 || die "no useradd here to create the system user $service_user: create it yourself (or pass --user NAME of an existing one), then run this again"
        "${add_user[@]}" || die "could not create the system user $service_user: ${add_user[*]}"
        echo "created the system user $service_user"
        record user "$service_user"
      else
        echo "note: the unit runs as $service_user, who does not exist here; install.sh creates the user only for a unit in /etc/systemd/system: ${add_user[*]}"
      fi
    fi
  fi

  # The service user reads the cluster key; nobody else does.
  if [ "$root" = 1 ] && [ -f "$lib_dir/cluster.key" ] && id -u "$service_user" >/dev/null 2>&1; then chown "$service_user": "$lib_dir/cluster.key"; fi

  # Components, the executable and its config are read, never written, by the
  # service: under ProtectSystem=strict they stay read-only, so a compromised
  # component cannot rewrite code the governor would then roll out. (Deploy as
  # root: node-bin deploy SRC_DIR.) ProtectHome hides /home, /root and
  # /run/user, unless the install lives there.
  protect_home=yes
  case "$lib_dir/" in /home/*|/root/*|/run/user/*) protect_home=read-only ;; esac
  if [ "$root" = 1 ]; then
    run_as="# The governor and its components run as $service_user, sandboxed: they
# write only to the runtime directory (sockets, the governor's state and the
# children's logs: %t/node-bin), the cache (%C/node-bin: the native addon and
# protos) and the state directory (%S/node-bin, \$STATE_DIRECTORY, for the
# components' own data). With a port below 1024 the sandbox would need
# AmbientCapabilities=CAP_NET_BIND_SERVICE (and that in CapabilityBoundingSet=).
User=$service_user
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=$protect_home
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
# AF_NETLINK: reading the host's interfaces (the address to advertise).
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"
  else
    # A user manager cannot set up mount namespaces or drop capabilities it
    # does not have: the filters that need neither.
    run_as="# The governor runs as you; the restrictions a user manager can apply.
NoNewPrivileges=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"
  fi
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
CacheDirectoryMode=0700
StateDirectory=node-bin
StateDirectoryMode=0700
Environment=NODEBIN_RUNTIME_DIR=%t/node-bin
Environment=NODEBIN_CACHE_DIR=%C/node-bin
UMask=0077
# SIGTERM goes to the governor alone: it drains and stops its children itself,
# and \`node-bin governor stop --keep-children\` recycles it (Restart brings it
# back; it adopts the children).
KillMode=process
Restart=always
RestartSec=2
$run_as

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
  if [ "$root" = 1 ]; then
    # The runtime and cache directories belong to the service user: commands that talk to the governor run as that user.
    echo "then: sudo -u $service_user env NODEBIN_RUNTIME_DIR=/run/node-bin NODEBIN_CACHE_DIR=/var/cache/node-bin $cmd governor status"
  else echo "then: $cmd governor status"; fi
else
  echo "next: $cmd governor --seed IP   (IP: a host already running one; none on the first host. To try components out: $cmd dev)"
fi

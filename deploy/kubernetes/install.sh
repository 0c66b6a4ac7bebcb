#!/bin/sh
# ociguard's node installer: the init container of deploy/kubernetes/daemonset.yaml runs it with
# the node's root filesystem mounted at /host. It can also be run by hand against any root.
#
#   install.sh [ROOT]        ROOT: the node's / as seen here (default: $OCIGUARD_ROOT or /host)
#
# 1. ociguard, ociguard-hook, ociguardd and ociguardctl into ROOT/PREFIX/bin, each copied to a
#    hidden temporary name beside its destination, fsynced, then renamed over it: an engine that
#    execs ociguard while this runs gets the old binary or the new one, never a half-written one.
#    A binary that is already identical is left alone (no new inode, no new mtime).
# 2. ROOT/etc/ociguard/config.toml, only when absent: the operator's config is never replaced.
# 3. The engine: containerd (ROOT/etc/containerd/config.toml) and/or CRI-O (ROOT/etc/crio/crio.conf
#    or crio.conf.d/) is told about the runtime with `ociguardctl setup`, which merges or writes
#    atomically and changes nothing when the entry is already there. The path it writes is the
#    node's (PREFIX/bin/ociguard), never the ROOT-prefixed one seen from this container.
# 4. The engine is restarted only when its config changed and OCIGUARD_RESTART_ENGINE=1 (see
#    below); otherwise the operator is told to do it.
#
# Idempotent: a second run finds everything in place and writes nothing. Any failed step stops
# the script with a message and a non-zero status (the init container then fails visibly and
# kubelet retries it), and so does a node without a known engine config.
#
# Environment:
#   OCIGUARD_ROOT           the node's root (default /host; the first argument wins)
#   OCIGUARD_PREFIX         install prefix on the node (default /usr/local: binaries in /usr/local/bin)
#   OCIGUARD_SRC            directory holding the four binaries (default: /usr/local/bin)
#   OCIGUARD_CONFIG_SOURCE  the config.toml installed when the node has none
#                           (default /usr/local/share/ociguard/config.toml)
#   OCIGUARD_ENGINE         auto (default: every engine whose config is found), containerd or crio
#   OCIGUARD_RESTART_ENGINE 1: restart a reconfigured engine via nsenter into the host's pid 1.
#                           Off by default: restarting containerd or CRI-O makes the node's CRI
#                           unavailable for a moment on every node the DaemonSet rolls out to,
#                           at a time the operator did not choose (and before the policy sync has
#                           put the ConfigMap's policies in place on a fresh node); running
#                           containers survive it, but kubelet sees the runtime down. Restart
#                           node by node (drain, restart, uncordon) instead, or opt in.

set -eu

PROG=ociguard-install
ROOT=${1:-${OCIGUARD_ROOT:-/host}}
PREFIX=${OCIGUARD_PREFIX:-/usr/local}
SRC=${OCIGUARD_SRC:-/usr/local/bin}
CONFIG_SOURCE=${OCIGUARD_CONFIG_SOURCE:-/usr/local/share/ociguard/config.toml}
ENGINE=${OCIGUARD_ENGINE:-auto}
RESTART=${OCIGUARD_RESTART_ENGINE:-0}
BINARIES="ociguard ociguard-hook ociguardd ociguardctl"

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Temporary files this run created; removed on any exit so a failure leaves no debris (they are
# hidden names, which neither engines nor the policy loader look at). Steps run in this shell,
# never in $(...), whose subshell would neither record them here nor run this trap.
TMPS=
cleanup() { for t in $TMPS; do rm -f "$t"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

case "$ROOT" in
/*) ;;
*) die "node root '$ROOT' is not an absolute path" ;;
esac
case "$PREFIX" in
/*) ;;
*) die "OCIGUARD_PREFIX '$PREFIX' is not an absolute path" ;;
esac
ROOT=${ROOT%/}
[ -d "$ROOT/" ] || die "node root '$ROOT' is not a directory (is the host's / mounted there?)"

# fsync these paths (files or directories); whole-system sync where sync takes no operands.
sync_paths() { sync -- "$@" 2>/dev/null || sync; }

# install_atomic SRC DEST MODE: DEST gets SRC's bytes; never half-written, untouched if equal.
# Sets CHANGED=1 when it wrote.
install_atomic() {
    CHANGED=0
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        # Same bytes; the mode is still made right (chmod does not replace the file).
        chmod "$3" "$2" || return 1
        return 0
    fi
    tmp="$(dirname -- "$2")/.$(basename -- "$2").ociguard-tmp.$$"
    TMPS="$TMPS $tmp"
    rm -f "$tmp"
    cp -- "$1" "$tmp" || return 1
    chmod "$3" "$tmp" || return 1
    sync_paths "$tmp"
    mv -f -- "$tmp" "$2" || return 1
    sync_paths "$(dirname -- "$2")"
    CHANGED=1
}

# The engines to register with, found before anything is written: a node without one is left as
# it was.
CTL="$SRC/ociguardctl"
containerd_config="$ROOT/etc/containerd/config.toml"
crio_dir="$ROOT/etc/crio"
have_containerd=0
have_crio=0
[ -f "$containerd_config" ] && have_containerd=1
# An empty /etc/crio (e.g. created by a hostPath mount) is not CRI-O.
if [ -f "$crio_dir/crio.conf" ] || [ -d "$crio_dir/crio.conf.d" ]; then
    have_crio=1
fi
case "$ENGINE" in
auto)
    [ "$have_containerd" = 1 ] || [ "$have_crio" = 1 ] ||
        die "no container engine config on the node: neither /etc/containerd/config.toml nor /etc/crio/crio.conf(.d) under $ROOT (containerd without a config file: write one first with 'containerd config default > /etc/containerd/config.toml')"
    ;;
containerd)
    [ "$have_containerd" = 1 ] || die "OCIGUARD_ENGINE=containerd but /etc/containerd/config.toml is not found under $ROOT"
    have_crio=0
    ;;
crio)
    [ "$have_crio" = 1 ] || die "OCIGUARD_ENGINE=crio but /etc/crio/crio.conf(.d) is not found under $ROOT"
    have_containerd=0
    ;;
*) die "OCIGUARD_ENGINE='$ENGINE': expected auto, containerd or crio" ;;
esac

# 1. Binaries.
BINDIR="$ROOT$PREFIX/bin"
for b in $BINARIES; do
    [ -f "$SRC/$b" ] && [ -x "$SRC/$b" ] || die "$SRC/$b: not found or not executable (OCIGUARD_SRC)"
done
mkdir -p -m 0755 "$BINDIR" || die "cannot create $BINDIR"
for b in $BINARIES; do
    install_atomic "$SRC/$b" "$BINDIR/$b" 0755 || die "installing $BINDIR/$b failed"
    if [ "$CHANGED" = 1 ]; then
        log "installed $PREFIX/bin/$b"
    else
        log "$PREFIX/bin/$b is up to date"
    fi
done

# 2. Config, only when absent.
ETC="$ROOT/etc/ociguard"
mkdir -p -m 0755 "$ETC" || die "cannot create $ETC"
if [ -e "$ETC/config.toml" ] || [ -L "$ETC/config.toml" ]; then
    log "/etc/ociguard/config.toml exists: kept as it is"
else
    [ -f "$CONFIG_SOURCE" ] || die "$CONFIG_SOURCE: not found (OCIGUARD_CONFIG_SOURCE)"
    cfg_tmp="$ETC/.config.toml.ociguard-tmp.$$"
    TMPS="$TMPS $cfg_tmp"
    # The shipped config names the hook under /usr/local/bin; follow the prefix.
    sed "s|\"/usr/local/bin/|\"$PREFIX/bin/|g" "$CONFIG_SOURCE" >"$cfg_tmp" || die "writing $cfg_tmp failed"
    chmod 0644 "$cfg_tmp" || die "chmod $cfg_tmp failed"
    sync_paths "$cfg_tmp"
    mv -f -- "$cfg_tmp" "$ETC/config.toml" || die "installing /etc/ociguard/config.toml failed"
    sync_paths "$ETC"
    log "installed /etc/ociguard/config.toml"
fi

# 3. Engines (found above).

# setup_engine ENGINE FILE: registers ociguard in FILE (a path under ROOT). Sets CHANGED=1 when
# it wrote. --dry-run first: it prints the diff, nothing when the entry is already there, so a
# node that is set up sees no write at all (not even a temporary file).
setup_engine() {
    CHANGED=0
    # --binary is the path the engine will exec on the node, not the one seen from here.
    diff=$("$CTL" setup "$1" --config "$2" --binary "$PREFIX/bin/ociguard" --dry-run 2>/dev/null) || diff=failed
    [ -n "$diff" ] || return 0
    "$CTL" setup "$1" --config "$2" --binary "$PREFIX/bin/ociguard" >&2 || return 1
    CHANGED=1
}

restart_engine() {
    if [ "$RESTART" = 1 ]; then
        # hostPID: pid 1 is the node's init; its mount, UTS, IPC, net and pid namespaces are
        # the node's, so systemctl talks to the node's systemd.
        log "restarting $1 on the node (OCIGUARD_RESTART_ENGINE=1)"
        nsenter -t 1 -m -u -i -n -p -- systemctl restart "$1" || die "restarting $1 failed"
    else
        log "$1's config changed: restart it on the node to load the ociguard runtime (systemctl restart $1; drain the node first if it runs workloads), then use RuntimeClass 'ociguard' (deploy/kubernetes/runtimeclass.yaml)"
    fi
}

if [ "$have_containerd" = 1 ]; then
    setup_engine containerd "$containerd_config" || die "ociguardctl setup containerd --config /etc/containerd/config.toml failed"
    if [ "$CHANGED" = 1 ]; then restart_engine containerd; else log "containerd already runs ociguard: nothing to restart"; fi
fi
if [ "$have_crio" = 1 ]; then
    setup_engine crio "$crio_dir/crio.conf.d/50-ociguard.conf" || die "ociguardctl setup crio --config /etc/crio/crio.conf.d/50-ociguard.conf failed"
    if [ "$CHANGED" = 1 ]; then restart_engine crio; else log "CRI-O already runs ociguard: nothing to restart"; fi
fi
log "done"

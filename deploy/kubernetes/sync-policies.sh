#!/bin/sh
# ociguard's policy sync: the sidecar of deploy/kubernetes/daemonset.yaml runs it to keep the
# node's /etc/ociguard/policies equal to the ConfigMap `ociguard-policies`, validated first.
#
#   sync-policies.sh [--once]
#
# Design. `ociguard` loads /etc/ociguard/policies/*.toml on every container create, so the set
# it sees must change from one validated set to the next in a single step:
#
#   /etc/ociguard/policies -> policies.d/20250101T120000Z     (a relative symlink)
#   /etc/ociguard/policies.d/20250101T120000Z/*.toml          (a generation: never modified)
#
# A sync copies the ConfigMap's *.toml into a new hidden staging directory inside policies.d
# (same filesystem as the link, so renames are atomic), fsyncs it, runs `ociguardctl policy
# check` on it with the node's config (the same loader, trust rules and admin_uid the shim
# uses), renames it to its generation name, and then publishes it by rename(2)-ing a new
# symlink over /etc/ociguard/policies. A create sees the old generation or the new one, whole:
# the loader resolves the directory symlink once and reads every file under the directory it
# resolved (policy/src/load.rs). The link is relative so it resolves the same on the node and
# under /host in this container. Old generations are kept for a while (the current one and the
# two before it) because a create that resolved the link just before a swap is still reading
# one; older ones and staging left by a killed sync are removed.
#
# Nothing is published unless the whole set passed: an invalid ConfigMap (a parse error, a
# duplicate name, an empty set, ...) leaves the node's policies exactly as they were and says
# why on stderr, once per ConfigMap version. A later, fixed version is synced as usual.
#
# Change detection: kubelet updates a ConfigMap volume by writing a new timestamped directory
# and swapping the `..data` symlink to it; the files are symlinks through `..data`. This script
# polls `..data`'s target (and reads the files through it, a snapshot kubelet does not modify).
# A plain directory (no `..data`: a hostPath, a test) is polled by its content's checksum.
#
# First use on a node whose /etc/ociguard/policies is a real directory (`make install`, a
# hand-made one): a symlink cannot be renamed over a directory, and moving the directory aside
# first leaves a moment with no policy directory, in which creates get the built-in default
# policy. So the sync refuses and says so, unless OCIGUARD_SYNC_TAKEOVER=1 accepts that moment
# (better: drain the node and move the directory aside by hand once).
#
# Environment:
#   OCIGUARD_ROOT            the node's root as seen here (default /host)
#   OCIGUARD_POLICY_DIR      the policy directory on the node (default /etc/ociguard/policies;
#                            must be the config's policy_dir)
#   OCIGUARD_POLICY_SOURCE   the mounted ConfigMap (default /etc/ociguard-configmap)
#   OCIGUARD_CTL             ociguardctl (default: ociguardctl in $PATH)
#   OCIGUARD_SYNC_INTERVAL   seconds between polls (default 5)
#   OCIGUARD_SYNC_TAKEOVER   1: replace a real policy directory (see above)
#
# --once: one sync, then exit 0 when the node has the ConfigMap's set (or already had it),
# 1 when it was refused.

set -eu

PROG=ociguard-policy-sync
ROOT=${OCIGUARD_ROOT:-/host}
ROOT=${ROOT%/}
POLICY_DIR=${OCIGUARD_POLICY_DIR:-/etc/ociguard/policies}
SOURCE=${OCIGUARD_POLICY_SOURCE:-/etc/ociguard-configmap}
CTL=${OCIGUARD_CTL:-ociguardctl}
INTERVAL=${OCIGUARD_SYNC_INTERVAL:-5}
TAKEOVER=${OCIGUARD_SYNC_TAKEOVER:-0}
ONCE=0
case "${1:-}" in
--once) ONCE=1 ;;
"") ;;
*)
    echo "usage: $0 [--once]" >&2
    exit 2
    ;;
esac

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }

case "$POLICY_DIR" in
/*) ;;
*)
    log "error: OCIGUARD_POLICY_DIR '$POLICY_DIR' is not absolute"
    exit 2
    ;;
esac
POLICY_DIR=${POLICY_DIR%/}
LINK="$ROOT$POLICY_DIR"         # the symlink the shim resolves
PARENT=$(dirname -- "$LINK")    # /etc/ociguard, where the link is renamed into place
GENS_NAME="$(basename -- "$LINK").d"
GENS="$PARENT/$GENS_NAME"       # policies.d: generations and staging
NODE_CONFIG="$ROOT/etc/ociguard/config.toml"

# New files and directories: root's, not group- or world-writable, as the shim's trust check
# demands (whatever umask the container was started with).
umask 022

STAGE=
cleanup() { [ -z "$STAGE" ] || rm -rf -- "$STAGE"; }
trap cleanup EXIT
trap 'exit 143' INT TERM

sync_paths() { sync -- "$@" 2>/dev/null || sync; }

# The directory to read the ConfigMap's files from: kubelet's current snapshot when the volume
# has the `..data` layout, else the directory itself.
snapshot_dir() {
    if [ -L "$SOURCE/..data" ]; then
        target=$(readlink "$SOURCE/..data") || return 1
        case "$target" in
        /*) echo "$target" ;;
        *) echo "$SOURCE/$target" ;;
        esac
    else
        echo "$SOURCE"
    fi
}

# What changes when the ConfigMap does.
fingerprint() {
    if [ -L "$SOURCE/..data" ]; then
        readlink "$SOURCE/..data"
    else
        # Names and contents of the policy files (hidden files are no policies).
        (cd "$SOURCE" && for f in *.toml; do [ -f "$f" ] && sha256sum "$f"; done) 2>/dev/null || true
    fi
}

# The generation the link points at now ("" when there is none).
current_generation() {
    if [ -L "$LINK" ]; then
        basename -- "$(readlink "$LINK")"
    fi
}

# same_set DIR1 DIR2: the two directories hold the same *.toml names with the same bytes.
same_set() {
    [ -d "$1" ] && [ -d "$2" ] || return 1
    for f in "$1"/*.toml "$2"/*.toml; do
        [ -e "$f" ] || continue
        n=$(basename -- "$f")
        cmp -s "$1/$n" "$2/$n" || return 1
    done
}

# Remove generations but the current one and the two newest others, and staging directories of
# syncs that died (older than 10 minutes: a sync in progress elsewhere is never that old).
collect_garbage() {
    keep=$(current_generation)
    n=0
    for g in $(ls -1 "$GENS" | grep -v '^\.' | sort -r); do
        [ "$g" = "$keep" ] && continue
        n=$((n + 1))
        [ "$n" -le 2 ] && continue
        rm -rf -- "${GENS:?}/$g"
    done
    find "$GENS" -mindepth 1 -maxdepth 1 -name '.staging-*' -mmin +10 -exec rm -rf -- {} + 2>/dev/null || true
}

# One sync. Returns 0 when the node now has the ConfigMap's set, 1 when the set was refused
# (the node's policies untouched).
sync_once() {
    snap=$(snapshot_dir) || {
        log "cannot read $SOURCE/..data"
        return 1
    }
    if [ -d "$LINK" ] && [ ! -L "$LINK" ]; then
        if [ "$TAKEOVER" != 1 ]; then
            log "refused: $POLICY_DIR on the node is a directory, not the symlink this sync manages; its policies stay in effect. Move it aside once while no containers start (mv $POLICY_DIR $POLICY_DIR.orig on a drained node), or set OCIGUARD_SYNC_TAKEOVER=1 to let the sync do it (creates in that instant get the built-in default policy)"
            return 1
        fi
    elif [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
        log "refused: $POLICY_DIR on the node is neither a directory nor a symlink"
        return 1
    fi
    mkdir -p -m 0755 "$GENS" || return 1

    STAGE="$GENS/.staging-$$"
    rm -rf -- "$STAGE"
    mkdir -m 0755 "$STAGE" || return 1
    count=0
    for f in "$snap"/*.toml; do
        [ -e "$f" ] || continue
        n=$(basename -- "$f")
        case "$n" in .*) continue ;; esac
        # cat, not cp: a fresh root-owned 0644 file whatever the volume's mode and owner.
        cat -- "$f" >"$STAGE/$n" || {
            log "cannot read $n from the ConfigMap (updated meanwhile? retrying at the next poll)"
            return 1
        }
        chmod 0644 "$STAGE/$n" || return 1
        count=$((count + 1))
    done
    for f in "$snap"/*; do
        n=$(basename -- "$f")
        case "$n" in *.toml) ;; *) [ -e "$f" ] && log "ignored: ConfigMap key '$n' (policies are *.toml)" ;; esac
    done
    # The ConfigMap changed while it was copied: this copy may mix two versions.
    if [ "$(snapshot_dir)" != "$snap" ]; then
        log "the ConfigMap changed while it was read: retrying"
        rm -rf -- "$STAGE"
        STAGE=
        return 1
    fi
    if [ "$count" = 0 ]; then
        # An emptied or mis-keyed ConfigMap would otherwise silently drop every policy.
        log "refused: the ConfigMap holds no *.toml policy; the node keeps its current policies (to run with the built-in default only, ship a default.toml)"
        rm -rf -- "$STAGE"
        STAGE=
        return 1
    fi

    current=$(current_generation)
    if [ -n "$current" ] && same_set "$STAGE" "$GENS/$current"; then
        rm -rf -- "$STAGE"
        STAGE=
        log "the node already has this set ($GENS_NAME/$current)"
        return 0
    fi

    # The whole set, as the shim would load it, with the node's config (admin_uid).
    if ! report=$(OCIGUARD_CONFIG="$NODE_CONFIG" "$CTL" policy check "$STAGE" 2>&1); then
        log "refused: the ConfigMap's policies are invalid; the node keeps its current policies${current:+ ($GENS_NAME/$current)}:"
        printf '%s\n' "$report" | sed "s|$STAGE/|configmap:|g; s|$STAGE|configmap|g" >&2
        rm -rf -- "$STAGE"
        STAGE=
        return 1
    fi
    sync_paths "$STAGE"/*.toml "$STAGE"

    gen=$(date -u +%Y%m%dT%H%M%SZ)
    while [ -e "$GENS/$gen" ]; do
        sleep 1
        gen=$(date -u +%Y%m%dT%H%M%SZ)
    done
    mv -T -- "$STAGE" "$GENS/$gen" || return 1
    STAGE=
    sync_paths "$GENS"

    if [ -d "$LINK" ] && [ ! -L "$LINK" ]; then
        # OCIGUARD_SYNC_TAKEOVER=1: the one non-atomic step, see the header.
        aside="$PARENT/$(basename -- "$LINK").pre-sync-$gen"
        mv -T -- "$LINK" "$aside" || return 1
        log "moved the node's policy directory aside to ${aside#"$ROOT"}"
    fi
    tmp_link="$PARENT/.$(basename -- "$LINK").ociguard-tmp.$$"
    rm -f -- "$tmp_link"
    ln -s "$GENS_NAME/$gen" "$tmp_link" || return 1
    mv -T -f -- "$tmp_link" "$LINK" || {
        rm -f -- "$tmp_link"
        return 1
    }
    sync_paths "$PARENT"
    log "synced: $POLICY_DIR -> $GENS_NAME/$gen ($count policies)"
    collect_garbage
    return 0
}

if [ "$ONCE" = 1 ]; then
    sync_once
    exit $?
fi

log "watching $SOURCE every ${INTERVAL}s for $POLICY_DIR"
last=
while :; do
    now=$(fingerprint)
    if [ "$now" != "$last" ]; then
        # A refused version is reported once; the same version is not retried every poll. A
        # failure to read (kubelet swapping underneath) is retried: the fingerprint changes.
        if sync_once || [ "$now" = "$(fingerprint)" ]; then
            last=$now
        fi
    fi
    sleep "$INTERVAL"
done

#!/usr/bin/env bash
# Prepare a Debian 12 host for ociguard's demo and tests.
#
# Usage: scripts/host-setup.sh [demo|test]...   (default: test)
#
#   demo  crun busybox-static, and the build's needs: libseccomp-dev (ociguard links
#         libseccomp to precompile filters), protobuf-compiler (containerd API), gcc,
#         clang (ociguardd's BPF enforcer), libelf-dev zlib1g-dev (libbpf)
#   test  the above plus runc nftables apparmor jq podman containerd docker.io uidmap iproute2
#         bpftool (the tests read the enforcer's pinned maps)
#
# What it does, each step only when needed (a run on a ready host is a no-op
# and takes a few milliseconds):
#   1. installs missing Debian packages (apt-get, --no-install-recommends);
#   2. on hybrid/v1 cgroup hosts, mounts the hugetlb v1 controller, without
#      which crun 1.8 refuses to run ("cgroups in hybrid mode not supported");
#   3. (test group, podman installed) writes containers.conf.d drop-ins so
#      that `podman run` works on a host whose root lacks CAP_SYS_RESOURCE
#      (default_ulimits within the current hard limits) and whose PID 1 is
#      not systemd (cgroupfs cgroup manager, file events logger).
# Everything it does is reported on stderr; stdout stays silent.
set -euo pipefail

log() { printf 'host-setup: %s\n' "$*" >&2; }
die() { printf 'host-setup: error: %s\n' "$*" >&2; exit 1; }

is_root=0
[[ $(id -u) -eq 0 ]] && is_root=1

# ---------------------------------------------------------------- arguments
groups=()
for arg in "$@"; do
    case "$arg" in
        demo|test) groups+=("$arg") ;;
        -h|--help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
            exit 0 ;;
        *) die "unknown argument '$arg' (expected: demo, test)" ;;
    esac
done
[[ ${#groups[@]} -eq 0 ]] && groups=(test)

want=()
want_podman_conf=0
for g in "${groups[@]}"; do
    case "$g" in
        demo) want+=(crun busybox-static libseccomp-dev protobuf-compiler gcc pkg-config
                     clang libelf-dev zlib1g-dev) ;;
        test) want+=(crun runc busybox-static nftables apparmor libseccomp-dev jq python3-yaml
                     podman containerd docker.io uidmap iproute2 gcc protobuf-compiler pkg-config
                     clang libelf-dev zlib1g-dev bpftool)
              want_podman_conf=1 ;;
    esac
done
# de-duplicate, keep order
declare -A seen=()
pkgs=()
for p in "${want[@]}"; do
    [[ -n ${seen[$p]:-} ]] && continue
    seen[$p]=1
    pkgs+=("$p")
done

# ---------------------------------------------------------------- packages
# One dpkg-query call for all packages (it exits 1 if any is unknown, but
# still prints the known ones).
declare -A status=()
while IFS='|' read -r name st; do
    status[${name%%:*}]=$st
done < <(dpkg-query -W -f='${Package}|${Status}\n' "${pkgs[@]}" 2>/dev/null || true)
missing=()
for p in "${pkgs[@]}"; do
    [[ ${status[$p]:-} == "install ok installed" ]] || missing+=("$p")
done

apt_lists_empty() {
    ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $is_root -ne 1 ]]; then
        die "missing packages: ${missing[*]}; run as root (e.g. sudo $0 ${groups[*]}) or: apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 only (missing: ${missing[*]})"
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_install() {
        apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >&2
    }
    if apt_lists_empty; then
        log "apt package lists are empty: running apt-get update"
        apt-get update >&2 || die "apt-get update failed"
        apt_install || die "apt-get install failed for: ${missing[*]}"
    elif ! apt_install; then
        log "apt-get install failed: running apt-get update and retrying"
        apt-get update >&2 || die "apt-get update failed"
        apt_install || die "apt-get install failed for: ${missing[*]}"
    fi
fi

# ---------------------------------------------------------------- cgroups
# Is a cgroup v1 hierarchy with the given controller mounted?
# mountinfo: ... <mount point> <opts> [optional...] - <fstype> <source> <super opts>
cgroup_v1_mounted() {
    local ctrl=$1
    awk -v c="$ctrl" '
        {
            for (i = 1; i <= NF; i++) if ($i == "-") break
            if ($(i + 1) != "cgroup") next
            n = split($(i + 3), o, ",")
            for (j = 1; j <= n; j++) if (o[j] == c) { found = 1; exit }
        }
        END { exit !found }' /proc/self/mountinfo
}

cgfs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo unknown)
if [[ $cgfs != cgroup2fs ]] && [[ $cgfs != unknown ]]; then
    # hybrid or legacy hierarchy (tmpfs with v1 controllers below it)
    if ! cgroup_v1_mounted hugetlb; then
        if [[ $is_root -ne 1 ]]; then
            log "skip: hugetlb cgroup mount (not root); crun may refuse hybrid cgroups"
        elif ! awk '$1 == "hugetlb" { f = 1 } END { exit !f }' /proc/cgroups 2>/dev/null; then
            log "skip: hugetlb cgroup mount (kernel has no hugetlb controller)"
        else
            log "mounting cgroup v1 hugetlb controller at /sys/fs/cgroup/hugetlb (crun needs it on hybrid hosts)"
            mkdir -p /sys/fs/cgroup/hugetlb \
                || die "cannot create /sys/fs/cgroup/hugetlb"
            mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb \
                || die "mount of the hugetlb cgroup controller failed"
        fi
    fi
fi

# ---------------------------------------------------------------- podman
# Podman 4.3 asks for RLIMIT_NOFILE=1048576 and a large RLIMIT_NPROC by
# default; without CAP_SYS_RESOURCE raising a hard limit fails with
# "crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted". Default the
# limits to values within the current hard limits instead.
confd=/etc/containers/containers.conf.d
ulimit_conf=$confd/ociguard-ulimits.conf
engine_conf=$confd/ociguard-engine.conf

# cap_limit HARD CAP -> min(HARD, CAP), treating "unlimited" as infinite
cap_limit() {
    local hard=$1 cap=$2
    if [[ $hard == unlimited ]] || ! [[ $hard =~ ^[0-9]+$ ]] || (( hard > cap )); then
        echo "$cap"
    else
        echo "$hard"
    fi
}

# conf_limit FILE NAME -> the hard value of NAME=soft:hard in FILE (or empty)
conf_limit() {
    sed -n "s/.*\"$2=[0-9]*:\([0-9]*\)\".*/\1/p" "$1" | head -n1
}

if [[ $want_podman_conf -eq 1 ]] && command -v podman >/dev/null; then
    if [[ $is_root -ne 1 ]]; then
        log "skip: podman host configuration (not root)"
    else
        hard_n=$(ulimit -Hn)
        hard_u=$(ulimit -Hu)
        n=$(cap_limit "$hard_n" 65536)
        m=$(cap_limit "$hard_u" 4096)
        rewrite=0
        if [[ ! -e $ulimit_conf ]]; then
            rewrite=1
        elif grep -q '^# written by ociguard scripts/host-setup.sh' "$ulimit_conf"; then
            # Our own file: rewrite only if it asks for more than this
            # shell may have (podman would fail then).
            cn=$(conf_limit "$ulimit_conf" nofile)
            cu=$(conf_limit "$ulimit_conf" nproc)
            if [[ -z $cn || -z $cu ]] || (( cn > n || cu > m )); then
                rewrite=1
            fi
        fi
        if [[ $rewrite -eq 1 ]]; then
            log "writing $ulimit_conf (default_ulimits nofile=$n:$n nproc=$m:$m)"
            mkdir -p "$confd"
            tmp=$(mktemp "$confd/.ociguard-ulimits.XXXXXX")
            cat >"$tmp" <<EOF
# written by ociguard scripts/host-setup.sh
# This host's root lacks CAP_SYS_RESOURCE, so containers may not get hard
# rlimits above the current ones (ulimit -Hn=$hard_n, ulimit -Hu=$hard_u).
[containers]
default_ulimits = ["nofile=$n:$n", "nproc=$m:$m"]
EOF
            chmod 0644 "$tmp"
            mv -f "$tmp" "$ulimit_conf"
        fi

        # Without systemd as PID 1 podman must use cgroupfs and file events.
        # (Podman 4.3 detects this itself, but an old /etc/containers/libpod.conf
        # or a containers.conf saying "systemd" would break it: be explicit.)
        pid1=$(cat /proc/1/comm 2>/dev/null || true)
        if [[ $pid1 != systemd ]] && [[ ! -e $engine_conf ]]; then
            log "writing $engine_conf (PID 1 is '${pid1:-?}', not systemd: cgroupfs, file events)"
            mkdir -p "$confd"
            tmp=$(mktemp "$confd/.ociguard-engine.XXXXXX")
            cat >"$tmp" <<EOF
# written by ociguard scripts/host-setup.sh
# PID 1 is not systemd on this host: no systemd cgroup manager, no journald.
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
            chmod 0644 "$tmp"
            mv -f "$tmp" "$engine_conf"
        fi
    fi
fi

exit 0

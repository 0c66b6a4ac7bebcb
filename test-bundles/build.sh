#!/usr/bin/env bash
# Build ociguard's test fixtures under test-bundles/out/ (git-ignored).
#
#   out/rootfs/              minimal root filesystem made of Debian's static busybox
#   out/image.tar            that rootfs as a deterministic tarball (podman import)
#   out/image-oci.tar        the same as a single-layer OCI image archive (ctr import)
#   out/capture-runtime      OCI runtime wrapper: records config.json on create, execs crun
#   out/podman/config.json   the config.json Podman 4.3 generated here (root + podman only)
#   out/containerd/config.json  the same from containerd/ctr (best effort)
#
# Idempotent: each output is rebuilt only when its inputs changed (the rootfs
# when the busybox binary's sha256 changed, captures when the image, the engine
# version or the capture runtime changed). A run with nothing to do takes well
# under a second. Progress and a one-line summary go to stderr; stdout is silent.
#
# Environment:
#   OCIGUARD_SKIP_CAPTURE=1   do not run podman/containerd (fixtures only)
#   OCIGUARD_FORCE_CAPTURE=1  re-run the captures even if up to date
set -euo pipefail
umask 022
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$here/out
logdir=$out/logs
mkdir -p "$out" "$logdir"

# Run after ourselves only: concurrent builds (e.g. parallel make) wait here.
exec 9>"$out/.lock"
flock 9

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }
skip() { printf 'skip: %s\n' "$*" >&2; }

summary=()
is_root=0
[[ $(id -u) -eq 0 ]] && is_root=1

IMAGE=localhost/ociguard-test:latest
CTR_NS=ociguard-test
CRUN=/usr/bin/crun
# Bump when the rootfs layout below changes, to force a rebuild.
ROOTFS_LAYOUT=1

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# Write stdin to FILE only if its content differs (keeps mtimes stable).
# Returns 0 if the file was (re)written, 1 if it was already up to date.
write_if_changed() {
    local file=$1 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$file"
    return 0
}

# ------------------------------------------------------------ static busybox
# 0 if FILE is an ELF executable without a PT_INTERP program header (static).
elf_is_static() {
    local f=$1 magic class data phoff phentsize phnum i type
    [[ -f $f && -r $f ]] || return 1
    magic=$(od -An -tx1 -N4 "$f" | tr -d ' \n')
    [[ $magic == 7f454c46 ]] || return 1
    class=$(od -An -tu1 -j4 -N1 "$f" | tr -d ' ')
    data=$(od -An -tu1 -j5 -N1 "$f" | tr -d ' ')
    [[ $data == 1 ]] || { file -bL "$f" 2>/dev/null | grep -q 'statically linked'; return; }
    if [[ $class == 2 ]]; then      # ELF64
        phoff=$(od -An -tu8 -j32 -N8 "$f" | tr -d ' ')
        phentsize=$(od -An -tu2 -j54 -N2 "$f" | tr -d ' ')
        phnum=$(od -An -tu2 -j56 -N2 "$f" | tr -d ' ')
    elif [[ $class == 1 ]]; then    # ELF32
        phoff=$(od -An -tu4 -j28 -N4 "$f" | tr -d ' ')
        phentsize=$(od -An -tu2 -j42 -N2 "$f" | tr -d ' ')
        phnum=$(od -An -tu2 -j44 -N2 "$f" | tr -d ' ')
    else
        return 1
    fi
    (( phnum > 0 )) || return 1
    for ((i = 0; i < phnum; i++)); do
        type=$(od -An -tu4 -j$((phoff + i * phentsize)) -N4 "$f" | tr -d ' ')
        [[ $type == 3 ]] && return 1    # PT_INTERP: dynamically linked
    done
    return 0
}

find_busybox() {
    local c
    if command -v dpkg >/dev/null; then
        while IFS= read -r c; do
            if elf_is_static "$c"; then echo "$c"; return 0; fi
        done < <(dpkg -L busybox-static 2>/dev/null | grep -E '/s?bin/busybox$' || true)
    fi
    for c in /bin/busybox /usr/bin/busybox; do
        if elf_is_static "$c"; then echo "$c"; return 0; fi
    done
    return 1
}

busybox=$(find_busybox) || die "no static busybox found: install Debian's busybox-static (scripts/host-setup.sh demo); a dynamically linked /bin/busybox cannot run inside the test rootfs"
bb_sha=$(sha256 "$busybox")

# ------------------------------------------------------------ rootfs
rootfs=$out/rootfs
rootfs_stamp="busybox-sha256=$bb_sha layout=$ROOTFS_LAYOUT"
rootfs_built=0
if [[ -d $rootfs && -f $out/.rootfs.stamp && $(<"$out/.rootfs.stamp") == "$rootfs_stamp" ]]; then
    summary+=("rootfs=up-to-date")
else
    log "building rootfs from $busybox"
    tmp=$out/.rootfs.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp"/{bin,proc,sys,dev,etc,tmp,root,run}
    chmod 1777 "$tmp/tmp"
    chmod 0700 "$tmp/root"
    cp "$busybox" "$tmp/bin/busybox"
    chmod 0755 "$tmp/bin/busybox"
    napplets=0
    while IFS= read -r applet; do
        [[ -z $applet || $applet == busybox || $applet == */* ]] && continue
        ln -s busybox "$tmp/bin/$applet"
        napplets=$((napplets + 1))
    done < <("$tmp/bin/busybox" --list | sort -u)
    (( napplets > 0 )) || die "'$busybox --list' printed no applets"
    cat >"$tmp/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$tmp/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
    cat >"$tmp/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
EOF
    chmod 0644 "$tmp"/etc/{passwd,group,hosts}
    rm -rf "$rootfs"
    mv "$tmp" "$rootfs"
    printf '%s\n' "$rootfs_stamp" >"$out/.rootfs.stamp"
    rootfs_built=1
    summary+=("rootfs=built($napplets applets)")
fi

# ------------------------------------------------------------ image.tar
tar_det=(--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu)
if [[ $rootfs_built -eq 1 || ! -s $out/image.tar ]]; then
    tar "${tar_det[@]}" -C "$rootfs" -cf "$out/image.tar.tmp" .
    mv -f "$out/image.tar.tmp" "$out/image.tar"
    summary+=("image.tar=built")
else
    summary+=("image.tar=up-to-date")
fi
layer_sha=$(sha256 "$out/image.tar")

# ------------------------------------------------------------ image-oci.tar
# A single-layer OCI image archive, written by hand (no engine needed), for
# `ctr image import`. Deterministic: no timestamps in the config.
goarch() {
    local a
    a=$(dpkg --print-architecture 2>/dev/null || uname -m)
    case $a in
        amd64|x86_64) echo amd64 ;;
        arm64|aarch64) echo arm64 ;;
        armhf|armel|arm*) echo arm ;;
        i386|i686) echo 386 ;;
        ppc64el|ppc64le) echo ppc64le ;;
        *) echo "$a" ;;
    esac
}
oci_stamp="layer=$layer_sha image=$IMAGE"
if [[ -s $out/image-oci.tar && -f $out/.image-oci.stamp && $(<"$out/.image-oci.stamp") == "$oci_stamp" ]]; then
    summary+=("image-oci.tar=up-to-date")
else
    arch=$(goarch)
    tmp=$out/.oci.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp/blobs/sha256"
    cp "$out/image.tar" "$tmp/blobs/sha256/$layer_sha"
    layer_size=$(stat -c %s "$out/image.tar")
    printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh"],"Labels":{"org.ociguard.test":"1"}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$arch" "$layer_sha" >"$tmp/config.json"
    cfg_sha=$(sha256 "$tmp/config.json")
    cfg_size=$(stat -c %s "$tmp/config.json")
    mv "$tmp/config.json" "$tmp/blobs/sha256/$cfg_sha"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$cfg_sha" "$cfg_size" "$layer_sha" "$layer_size" >"$tmp/manifest.json"
    man_sha=$(sha256 "$tmp/manifest.json")
    man_size=$(stat -c %s "$tmp/manifest.json")
    mv "$tmp/manifest.json" "$tmp/blobs/sha256/$man_sha"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
        "$man_sha" "$man_size" "$arch" "$IMAGE" "${IMAGE##*:}" >"$tmp/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$tmp/oci-layout"
    tar "${tar_det[@]}" -C "$tmp" -cf "$out/image-oci.tar.tmp" oci-layout index.json blobs
    mv -f "$out/image-oci.tar.tmp" "$out/image-oci.tar"
    rm -rf "$tmp"
    printf '%s\n' "$oci_stamp" >"$out/.image-oci.stamp"
    summary+=("image-oci.tar=built")
fi

# ------------------------------------------------------------ capture runtime
# Engines call it as their OCI runtime. On `create` it copies the bundle's
# config.json to out/capture/last-config.json, then (for every subcommand)
# execs crun with the unchanged arguments. Every call is appended to
# out/capture/calls.log.
capdir=$out/capture
mkdir -p "$capdir"
capture_runtime=$out/capture-runtime
write_if_changed "$capture_runtime" <<EOF || true
#!/bin/sh
# Generated by ociguard test-bundles/build.sh. Not a real runtime: it records
# the config.json an engine hands over on "create", then execs crun.
capdir=$(printf '%q' "$capdir")
crun=\${OCIGUARD_CAPTURE_CRUN:-$CRUN}
echo "\$*" >>"\$capdir/calls.log" 2>/dev/null || :
cmd='' bundle=. skipnext='' want=''
for a in "\$@"; do
    if [ -n "\$skipnext" ]; then skipnext=; continue; fi
    if [ -n "\$want" ]; then bundle=\$a; want=; continue; fi
    if [ -z "\$cmd" ]; then
        case \$a in
            --root|--log|--log-format|--rootless|--cgroup-manager|--criu) skipnext=1 ;;
            -*) ;;
            *) cmd=\$a ;;
        esac
        continue
    fi
    case \$a in
        --bundle|-b) want=1 ;;
        --bundle=*) bundle=\${a#--bundle=} ;;
    esac
done
if [ "\$cmd" = create ]; then
    tmp=\$capdir/.config.\$\$
    if cp "\$bundle/config.json" "\$tmp" 2>/dev/null; then
        mv -f "\$tmp" "\$capdir/last-config.json"
    else
        rm -f "\$tmp"
        echo "capture-runtime: cannot read \$bundle/config.json" >>"\$capdir/calls.log" 2>/dev/null || :
    fi
fi
exec "\$crun" "\$@"
EOF
chmod 0755 "$capture_runtime"
capture_sha=$(sha256 "$capture_runtime")

# Check a captured config.json; echo nothing, return non-zero if unusable.
valid_config() {
    local f=$1
    [[ -s $f ]] || return 1
    if command -v jq >/dev/null; then
        jq -e '.ociVersion and .process.args and .root.path and .linux' "$f" >/dev/null 2>&1
    else
        grep -q '"ociVersion"' "$f"
    fi
}

# Hard rlimits a container may get without CAP_SYS_RESOURCE (see host-setup.sh).
cap_limit() {
    local hard=$1 cap=$2
    if [[ $hard == unlimited ]] || ! [[ $hard =~ ^[0-9]+$ ]] || (( hard > cap )); then
        echo "$cap"
    else
        echo "$hard"
    fi
}

stamp_ok() { [[ -f $1 && -s $2 && $(<"$1") == "$3" && ${OCIGUARD_FORCE_CAPTURE:-0} != 1 ]]; }

# ------------------------------------------------------------ podman capture
capture_podman() {
    local reason name stamp dest=$out/podman lbl n m plog=$logdir/podman.log
    if [[ ${OCIGUARD_SKIP_CAPTURE:-0} == 1 ]]; then reason="OCIGUARD_SKIP_CAPTURE=1"
    elif [[ $is_root -ne 1 ]]; then reason="not root"
    elif ! command -v podman >/dev/null; then reason="podman not installed"
    elif [[ ! -x $CRUN ]]; then reason="$CRUN not installed"
    fi
    if [[ -n ${reason:-} ]]; then
        skip "podman config capture ($reason)"
        summary+=("podman=skipped($reason)")
        return 0
    fi
    stamp="layer=$layer_sha capture=$capture_sha $(podman --version 2>/dev/null) $($CRUN --version 2>/dev/null | head -n1)"
    if stamp_ok "$dest/.stamp" "$dest/config.json" "$stamp"; then
        summary+=("podman=up-to-date")
        return 0
    fi
    mkdir -p "$dest"
    : >"$plog"

    # Import the image, or re-import it when the tarball changed.
    lbl=$(podman image inspect --format '{{index .Labels "org.ociguard.layer-sha256"}}' "$IMAGE" 2>>"$plog" || true)
    if [[ $lbl != "$layer_sha" ]]; then
        log "podman import $IMAGE"
        podman import \
            --change 'LABEL org.ociguard.test=1' \
            --change "LABEL org.ociguard.layer-sha256=$layer_sha" \
            --change 'CMD ["/bin/sh"]' \
            "$out/image.tar" "$IMAGE" >>"$plog" 2>&1 \
            || die "podman import failed (see $plog): $(tail -n3 "$plog")"
    fi

    # This host's root lacks CAP_SYS_RESOURCE: keep the hard rlimits within the
    # current ones (host-setup.sh also sets containers.conf default_ulimits).
    n=$(cap_limit "$(ulimit -Hn)" 65536)
    m=$(cap_limit "$(ulimit -Hu)" 4096)
    name=ociguard-capture-$$
    rm -f "$capdir/last-config.json"
    : >"$capdir/calls.log"
    log "podman run (capture runtime) $IMAGE true"
    if ! timeout 120 podman --runtime "$capture_runtime" run --rm --name "$name" \
            --network none --ulimit "nofile=$n:$n" --ulimit "nproc=$m:$m" \
            "$IMAGE" true </dev/null >>"$plog" 2>&1; then
        podman rm -f "$name" >>"$plog" 2>&1 || true
        die "podman run with the capture runtime failed (see $plog; did scripts/host-setup.sh run?): $(tail -n3 "$plog")"
    fi
    valid_config "$capdir/last-config.json" \
        || die "podman ran, but the capture runtime recorded no valid config.json (see $capdir/calls.log)"
    mv -f "$capdir/last-config.json" "$dest/config.json"
    printf '%s\n' "$stamp" >"$dest/.stamp"
    summary+=("podman=captured")
}

# ------------------------------------------------------------ containerd capture
ctd_pid=
ctd_state=/run/ociguard-test/containerd
ctd_root=/var/lib/ociguard-test/containerd
ctd_sock=

stop_containerd() {
    if [[ -n $ctd_pid ]]; then
        kill -TERM "$ctd_pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 50; i++)); do
            kill -0 "$ctd_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$ctd_pid" 2>/dev/null || true
        wait "$ctd_pid" 2>/dev/null || true
        ctd_pid=
    fi
}
trap stop_containerd EXIT

ctr_() { ctr --address "$ctd_sock" --namespace "$CTR_NS" "$@"; }

# Best effort: on any problem print a skip message and go on.
capture_containerd() {
    local reason='' stamp dest=$out/containerd clog=$logdir/containerd.log i
    if [[ ${OCIGUARD_SKIP_CAPTURE:-0} == 1 ]]; then reason="OCIGUARD_SKIP_CAPTURE=1"
    elif [[ $is_root -ne 1 ]]; then reason="not root"
    elif ! command -v ctr >/dev/null || ! command -v containerd >/dev/null; then reason="ctr/containerd not installed"
    elif ! command -v containerd-shim-runc-v2 >/dev/null; then reason="containerd-shim-runc-v2 not installed"
    elif [[ ! -x $CRUN ]]; then reason="$CRUN not installed"
    fi
    if [[ -n $reason ]]; then
        skip "containerd config capture ($reason)"
        summary+=("containerd=skipped($reason)")
        return 0
    fi
    stamp="oci=$(sha256 "$out/image-oci.tar") capture=$capture_sha $(containerd --version 2>/dev/null) $($CRUN --version 2>/dev/null | head -n1)"
    if stamp_ok "$dest/.stamp" "$dest/config.json" "$stamp"; then
        summary+=("containerd=up-to-date")
        return 0
    fi
    mkdir -p "$dest"
    : >"$clog"

    # Use a running containerd if there is one, else start a private one.
    if [[ -S /run/containerd/containerd.sock ]] \
        && ctr --address /run/containerd/containerd.sock version >>"$clog" 2>&1; then
        ctd_sock=/run/containerd/containerd.sock
        log "using the running containerd at $ctd_sock"
    else
        mkdir -p "$ctd_state" "$ctd_root"
        ctd_sock=$ctd_state/containerd.sock
        cat >"$ctd_state/config.toml" <<EOF
version = 2
root = "$ctd_root"
state = "$ctd_state/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ctd_sock"
[ttrpc]
  address = "$ctd_sock.ttrpc"
EOF
        log "starting a private containerd ($ctd_sock)"
        containerd --config "$ctd_state/config.toml" >>"$clog" 2>&1 </dev/null &
        ctd_pid=$!
        for ((i = 0; i < 100; i++)); do
            ctr --address "$ctd_sock" version >/dev/null 2>&1 && break
            kill -0 "$ctd_pid" 2>/dev/null || break
            sleep 0.1
        done
        if ! ctr --address "$ctd_sock" version >>"$clog" 2>&1; then
            stop_containerd
            skip "containerd config capture (containerd did not start; see $clog)"
            summary+=("containerd=skipped(containerd did not start)")
            return 0
        fi
    fi

    if ! ctr_ image import "$out/image-oci.tar" >>"$clog" 2>&1; then
        stop_containerd
        skip "containerd config capture (ctr image import failed; see $clog)"
        summary+=("containerd=skipped(import failed)")
        return 0
    fi
    # Leftovers of an interrupted run would make `ctr run` fail.
    ctr_ task kill --signal SIGKILL cap1 >/dev/null 2>&1 || true
    ctr_ task delete --force cap1 >/dev/null 2>&1 || true
    ctr_ container delete cap1 >/dev/null 2>&1 || true

    rm -f "$capdir/last-config.json"
    : >>"$capdir/calls.log"
    log "ctr run (capture runtime) $IMAGE true"
    if ! timeout 120 ctr --address "$ctd_sock" --namespace "$CTR_NS" run --rm \
            --runc-binary "$capture_runtime" "$IMAGE" cap1 true </dev/null >>"$clog" 2>&1; then
        ctr_ task delete --force cap1 >>"$clog" 2>&1 || true
        ctr_ container delete cap1 >>"$clog" 2>&1 || true
        stop_containerd
        skip "containerd config capture (ctr run failed; see $clog)"
        summary+=("containerd=skipped(ctr run failed)")
        return 0
    fi
    stop_containerd
    if ! valid_config "$capdir/last-config.json"; then
        skip "containerd config capture (no valid config.json recorded; see $capdir/calls.log)"
        summary+=("containerd=skipped(nothing recorded)")
        return 0
    fi
    mv -f "$capdir/last-config.json" "$dest/config.json"
    printf '%s\n' "$stamp" >"$dest/.stamp"
    summary+=("containerd=captured")
}

capture_podman
capture_containerd

printf 'build.sh: %s (out: %s)\n' "${summary[*]}" "$out" >&2

#!/usr/bin/env bash
# Put the static build of one of the per-operation binaries at OUT (see the Makefile's `build`).
#
#   scripts/build-static.sh MUSL_TARGET PACKAGE BIN GLIBC_BUILD OUT
#
# `ociguard` runs on every runtime call an engine makes (twice per container: create and
# delete, plus start, state, kill...) and `ociguard-hook` once per OCI hook of every container,
# so their start-up is on every container's path. A static musl build skips glibc's start-up,
# which probes the CPU's caches with a few dozen `cpuid` instructions (each a trap to the
# hypervisor on a VM): here `ociguard state` takes 1.1 ms of CPU instead of 2.5 ms.
#
# When the musl target's standard library is missing and rustup is there, it is added once;
# when that cannot be done (offline), or OCIGUARD_NO_MUSL=1, the glibc build GLIBC_BUILD is used
# and everything works the same, only slower to start.
#
# libseccomp (the shim's precompiled filters) is linked from Debian's static archive, which is
# plain C and links against musl's libc (see `__fprintf_chk` in shim/src/sys.rs). Its directory
# also holds glibc's libc.a, which must not be on a musl link's search path: the archive alone
# is copied to target/libseccomp/.
set -euo pipefail

musl=$1
package=$2
bin=$3
glibc_build=$4
out=$5
cargo=${CARGO:-cargo}

have_musl() { [[ -d "$(rustc --print sysroot)/lib/rustlib/$musl/lib" ]]; }

src=$glibc_build
if [[ -z ${OCIGUARD_NO_MUSL:-} && $musl == *-musl ]]; then
    if ! have_musl && command -v rustup >/dev/null; then
        echo "build-static: adding Rust's $musl target (rustup) for static musl binaries" >&2
        timeout 180 rustup target add "$musl" >&2 ||
            echo "build-static: could not add $musl: using the glibc build of $bin" >&2
    fi
    if have_musl; then
        libdir=$(pkg-config --variable=libdir libseccomp 2>/dev/null || echo /usr/lib/x86_64-linux-gnu)
        mkdir -p target/libseccomp
        cp -u "$libdir/libseccomp.a" target/libseccomp/
        LIBSECCOMP_LIB_PATH=$PWD/target/libseccomp LIBSECCOMP_LINK_TYPE=static \
            "$cargo" build --release --target "$musl" -p "$package" --bin "$bin"
        src=target/$musl/release/$bin
    fi
fi
mkdir -p "$(dirname "$out")"
# Replaced by rename: a test or engine running it never sees it half-written.
install -m 0755 "$src" "$out.tmp"
mv -f "$out.tmp" "$out"
echo "build-static: $out is $src" >&2

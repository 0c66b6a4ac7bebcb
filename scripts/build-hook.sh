#!/usr/bin/env bash
# Put the ociguard-hook to install, test and benchmark at OUT (see the Makefile's `build`).
#
#   scripts/build-hook.sh MUSL_TARGET GLIBC_HOOK OUT
#
# The hook runs once per OCI hook of every container, so its start-up is on every container's
# start path. A static musl build skips glibc's start-up, which probes the CPU with a few dozen
# `cpuid` instructions (each a trap to the hypervisor on a VM): ~0.5 ms less per run here. When
# the musl target's standard library is missing and rustup is there, it is added once; when
# that cannot be done (offline), or OCIGUARD_NO_MUSL=1, the glibc build GLIBC_HOOK is used and
# everything works the same, only slower to start.
set -euo pipefail

musl=$1
glibc_hook=$2
out=$3
cargo=${CARGO:-cargo}

have_musl() { [[ -d "$(rustc --print sysroot)/lib/rustlib/$musl/lib" ]]; }

src=$glibc_hook
if [[ -z ${OCIGUARD_NO_MUSL:-} && $musl == *-musl ]]; then
    if ! have_musl && command -v rustup >/dev/null; then
        echo "build-hook: adding Rust's $musl target (rustup) for a static musl ociguard-hook" >&2
        timeout 180 rustup target add "$musl" >&2 ||
            echo "build-hook: could not add $musl: using the glibc build of the hook" >&2
    fi
    if have_musl; then
        "$cargo" build --release --target "$musl" -p ociguard-hooks --bin ociguard-hook
        src=target/$musl/release/ociguard-hook
    fi
fi
mkdir -p "$(dirname "$out")"
# Replaced by rename: a test or engine running the hook never sees it half-written.
install -m 0755 "$src" "$out.tmp"
mv -f "$out.tmp" "$out"
echo "build-hook: $out is $src" >&2

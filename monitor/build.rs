//! Compiles ociguardd's BPF enforcer (`bpf/enforcer.bpf.c`) with clang into an object that
//! `src/bpf.rs` embeds and libbpf loads, relocating it (CO-RE) against the running kernel's
//! BTF. Only ociguardd (feature `daemon`) carries it: the hook and ociguardctl build without
//! clang.
//!
//! The compiler is `$OCIGUARD_CLANG`, else the first of `clang`, `clang-14`...`clang-19` found.

// A build script reports failure by panicking: that is what cargo shows the user.
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/enforcer.bpf.c");
    println!("cargo:rerun-if-changed=bpf/vmlinux_min.h");
    println!("cargo:rerun-if-env-changed=OCIGUARD_CLANG");
    if std::env::var_os("CARGO_FEATURE_DAEMON").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("enforcer.bpf.o");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" {
        // The enforcer reads x86_64's syscall registers; elsewhere ociguardd has the
        // fanotify guard only (bpf.rs reports the enforcer as not built).
        std::fs::write(&object, b"").expect("write an empty enforcer object");
        return;
    }
    let clang = find_clang().unwrap_or_else(|| {
        panic!(
            "ociguardd's BPF enforcer needs clang (apt-get install clang, or set OCIGUARD_CLANG); \
             scripts/host-setup.sh installs it"
        )
    });
    let status = Command::new(&clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-mcpu=v3",
            "-D__TARGET_ARCH_x86",
        ])
        .args([
            "-Wall",
            "-Werror",
            "-Ibpf",
            "-c",
            "bpf/enforcer.bpf.c",
            "-o",
        ])
        .arg(&object)
        .status()
        .unwrap_or_else(|e| panic!("run {clang}: {e}"));
    assert!(
        status.success(),
        "{clang} could not compile bpf/enforcer.bpf.c ({status})"
    );
}

fn find_clang() -> Option<String> {
    if let Some(c) = std::env::var_os("OCIGUARD_CLANG") {
        return Some(c.to_string_lossy().into_owned());
    }
    let names = ["clang"]
        .into_iter()
        .map(str::to_owned)
        .chain((14..=19).rev().map(|v| format!("clang-{v}")));
    for name in names {
        let ok = Command::new(&name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(name);
        }
    }
    None
}

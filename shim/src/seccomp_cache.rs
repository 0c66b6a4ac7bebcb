//! Precompiled seccomp programs for crun: a content-addressed cache of the BPF that
//! `ociguard_policy::seccomp_bpf::compile` makes from a `linux.seccomp` profile, and the
//! `run.oci.seccomp_bpf_data` annotation that hands it to crun.
//!
//! crun compiles `linux.seccomp` with libseccomp on every start (15-30 ms for an engine-sized
//! profile); given the annotation it loads the program as is. A node runs few distinct profiles,
//! so after the first container each start costs one small file read.
//!
//! Entries live in `<state_dir>/seccomp-cache/<sha256>.bpf` (tmpfs `/run/ociguard` by default;
//! directory mode 0700, root-only like the rest of the state). They are written to a temp file
//! and renamed into place, so a reader never sees a partial one, and checked structurally on
//! every read, so a damaged entry is recompiled rather than loaded.

use std::fs;
use std::path::Path;

use base64::Engine;
use ociguard_policy::digest::sha256;
use ociguard_policy::seccomp_bpf::{self, BpfError};
use ociguard_policy::Rewritten;
use serde_json::{Map, Value};

use crate::Context;

/// crun loads this base64-encoded program instead of compiling `linux.seccomp`.
pub const BPF_ANNOTATION: &str = "run.oci.seccomp_bpf_data";
/// With this set (to anything but "0") crun fails on a syscall name libseccomp does not know,
/// where the precompiled program would have skipped it.
pub const FAIL_UNKNOWN_ANNOTATION: &str = "run.oci.seccomp_fail_unknown_syscall";
/// `sha256:` of the [`BPF_ANNOTATION`] value ociguard wrote, telling ours (recomputed on every
/// create) from one a policy let the workload bring (left alone).
pub const OWN_BPF_DIGEST: &str = ociguard_policy::annotations::SECCOMP_BPF_DIGEST;

const CACHE_DIR: &str = "seccomp-cache";
/// `struct sock_filter` is 8 bytes.
const INSN: usize = 8;
/// The kernel refuses longer classic BPF programs (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("compile linux.seccomp: {source}")]
    Compile { source: BpfError },
    #[error("seccomp cache: {0}")]
    Store(#[from] crate::atomic::StoreError),
    #[error("config.json: {field} is not a JSON object")]
    Shape { field: &'static str },
}

/// The base64 program for `profile` and whether it came from the cache.
///
/// On a miss (or an entry that fails the structural check) the profile is compiled and stored.
/// Any error means "let crun compile it": nothing is cached for a profile that did not compile.
pub fn bpf_for(state_dir: &Path, profile: &Value) -> Result<(String, bool), CacheError> {
    let key = seccomp_bpf::cache_key(profile);
    let dir = state_dir.join(CACHE_DIR);
    let mut path = dir.join(key.strip_prefix("sha256:").unwrap_or(&key));
    path.set_extension("bpf");

    // Any read error (usually NotFound) is a miss; a real problem with the directory shows up
    // when storing.
    if let Ok(bpf) = fs::read(&path) {
        if is_plausible_bpf(&bpf) {
            return Ok((encode(&bpf), true));
        }
    }
    let bpf = seccomp_bpf::compile(profile).map_err(|source| CacheError::Compile { source })?;
    crate::atomic::store(&dir, &path, &bpf)?;
    Ok((encode(&bpf), false))
}

/// The create-path step: when the delegate is crun, give the final document the precompiled
/// program for its `linux.seccomp` (see [`annotate`]).
///
/// Runs after the policy rewrite, which strips a workload's own [`BPF_ANNOTATION`] under
/// enforce, so the one set here is recomputed from the final profile on every create. Never
/// fails the create: on any error crun compiles the profile itself, as it would without
/// ociguard, and the reason is logged.
pub fn precompile(ctx: &Context<'_>, id: &str, rewritten: &mut Rewritten) {
    if !ctx.runtime.path().is_some_and(delegate_honours_bpf_data) {
        return;
    }
    match annotate(&ctx.config.state_dir, &mut rewritten.document) {
        Ok(Annotated::Set { cache_hit }) => ctx.logger.debug(&format!(
            "container {id}: seccomp program {} ({BPF_ANNOTATION})",
            if cache_hit { "from cache" } else { "compiled" }
        )),
        Ok(Annotated::NoProfile) => {}
        Ok(other) => ctx.logger.debug(&format!(
            "container {id}: seccomp left to the runtime to compile: {other:?}"
        )),
        Err(e) => ctx.logger.warn(&format!(
            "container {id}: {e}; the runtime compiles the seccomp profile itself"
        )),
    }
}

/// Whether the delegate runtime loads [`BPF_ANNOTATION`]: crun does (also when installed as
/// `krun`, its libkrun build); runc and others ignore the annotation, so it would be wasted work.
pub fn delegate_honours_bpf_data(runtime: &Path) -> bool {
    matches!(
        runtime.file_name().and_then(|n| n.to_str()),
        Some("crun" | "krun")
    )
}

/// What [`annotate`] did to a `config.json` document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Annotated {
    /// [`BPF_ANNOTATION`] now holds the program for the document's `linux.seccomp`.
    Set { cache_hit: bool },
    /// No `linux.seccomp`: nothing for crun to compile.
    NoProfile,
    /// [`FAIL_UNKNOWN_ANNOTATION`] is set: only crun's own compile can fail as asked.
    FailUnknownSyscall,
    /// The document carries a [`BPF_ANNOTATION`] that ociguard did not write (the policy allows
    /// it, or audit mode kept it); crun would load that one, so it is left as it is.
    Foreign,
}

/// Hand crun the precompiled program for the final document's `linux.seccomp`: set
/// [`BPF_ANNOTATION`] (and [`OWN_BPF_DIGEST`]), replacing one that ociguard set on an earlier
/// attempt, or remove ours where crun must compile after all.
///
/// Call it on the document after the policy rewrite, only when the delegate is crun. The
/// profile stays in `linux.seccomp`: crun still takes `flags` and `listenerPath` from there.
/// On error the document is unchanged apart from removing ociguard's own annotation, so crun
/// compiles the profile itself.
pub fn annotate(state_dir: &Path, document: &mut Value) -> Result<Annotated, CacheError> {
    let root = document
        .as_object_mut()
        .ok_or(CacheError::Shape { field: "document" })?;
    let annotations = root
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object()
        .ok_or(CacheError::Shape {
            field: "annotations",
        })?;
    if !is_ours_or_absent(annotations) {
        return Ok(Annotated::Foreign);
    }
    // crun's test: present and not "0" (annotation values are strings).
    let fail_unknown = annotations
        .get(FAIL_UNKNOWN_ANNOTATION)
        .is_some_and(|v| v.as_str() != Some("0"));
    let profile = root
        .get("linux")
        .and_then(|l| l.get("seccomp"))
        .filter(|p| !p.is_null());
    let computed = match profile {
        None => Err(Annotated::NoProfile),
        Some(_) if fail_unknown => Err(Annotated::FailUnknownSyscall),
        Some(p) => Ok(bpf_for(state_dir, p)),
    };

    let Some(annotations) = root.get_mut("annotations").and_then(Value::as_object_mut) else {
        return Err(CacheError::Shape {
            field: "annotations",
        });
    };
    // Ours (or none): it must match the final profile or go. shift_remove keeps the other
    // annotations in place, so a retried create writes the same bytes.
    annotations.shift_remove(BPF_ANNOTATION);
    annotations.shift_remove(OWN_BPF_DIGEST);
    let (bpf, cache_hit) = match computed {
        Err(skipped) => return Ok(skipped),
        Ok(result) => result?,
    };
    annotations.insert(
        OWN_BPF_DIGEST.to_owned(),
        Value::String(sha256(bpf.as_bytes())),
    );
    annotations.insert(BPF_ANNOTATION.to_owned(), Value::String(bpf));
    Ok(Annotated::Set { cache_hit })
}

/// No [`BPF_ANNOTATION`], or one whose digest matches [`OWN_BPF_DIGEST`]. A workload could
/// forge the pair, but only for a program that ociguard then replaces with the right one.
fn is_ours_or_absent(annotations: &Map<String, Value>) -> bool {
    let Some(value) = annotations.get(BPF_ANNOTATION) else {
        return true;
    };
    let (Some(value), Some(own)) = (
        value.as_str(),
        annotations.get(OWN_BPF_DIGEST).and_then(Value::as_str),
    ) else {
        return false;
    };
    sha256(value.as_bytes()) == own
}

fn encode(bpf: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bpf)
}

/// Whether `bpf` can be a program libseccomp exported: whole instructions, within the kernel's
/// limit, every jump landing inside the program and the last instruction a return (the checks
/// the kernel's `bpf_check_classic` would fail a truncated program on, done here so that a
/// damaged entry is recompiled instead of failing the container's start).
fn is_plausible_bpf(bpf: &[u8]) -> bool {
    if bpf.is_empty() || bpf.len() % INSN != 0 || bpf.len() / INSN > MAX_INSNS {
        return false;
    }
    let len = bpf.len() / INSN;
    for (pc, insn) in bpf.chunks_exact(INSN).enumerate() {
        let code = u16::from_ne_bytes([insn[0], insn[1]]);
        let class = code & 0x07;
        const BPF_JMP: u16 = 0x05;
        const BPF_JA: u16 = 0x00;
        if class == BPF_JMP {
            let next = pc + 1;
            let in_range = if code & 0xf0 == BPF_JA {
                let k = u32::from_ne_bytes([insn[4], insn[5], insn[6], insn[7]]);
                usize::try_from(k).is_ok_and(|k| next.saturating_add(k) < len)
            } else {
                next + usize::from(insn[2]) < len && next + usize::from(insn[3]) < len
            };
            if !in_range {
                return false;
            }
        }
    }
    const BPF_RET: u16 = 0x06;
    let last = &bpf[bpf.len() - INSN..];
    u16::from_ne_bytes([last[0], last[1]]) & 0x07 == BPF_RET
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

    use super::*;
    use ociguard_policy::seccomp::builtin_profile;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    fn entry(state: &Path, profile: &Value) -> std::path::PathBuf {
        let key = seccomp_bpf::cache_key(profile);
        state
            .join(CACHE_DIR)
            .join(format!("{}.bpf", key.strip_prefix("sha256:").unwrap()))
    }

    fn decode(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn miss_then_hit() {
        let state = tempfile::tempdir().unwrap();
        let p = builtin_profile(false);
        let (a, hit) = bpf_for(state.path(), &p).unwrap();
        assert!(!hit);
        let (b, hit) = bpf_for(state.path(), &p).unwrap();
        assert!(hit);
        assert_eq!(a, b);
        assert_eq!(decode(&a), seccomp_bpf::compile(&p).unwrap());
        let dir = state.path().join(CACHE_DIR);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // Only the entry: no temp files left behind.
        let names: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert!(entry(state.path(), &p).exists());
    }

    #[test]
    fn damaged_entries_are_recompiled() {
        let state = tempfile::tempdir().unwrap();
        let p = builtin_profile(false);
        let (good, _) = bpf_for(state.path(), &p).unwrap();
        let path = entry(state.path(), &p);
        let bytes = decode(&good);
        let damaged: Vec<Vec<u8>> = vec![
            Vec::new(),
            bytes[..bytes.len() - 3].to_vec(),
            // Whole instructions, but cut: jumps now point past the end.
            bytes[..bytes.len() / 2].to_vec(),
            // Whole instructions, ending in a non-return.
            bytes[..8].to_vec(),
        ];
        for d in damaged {
            fs::write(&path, &d).unwrap();
            let (b64, hit) = bpf_for(state.path(), &p).unwrap();
            assert!(!hit, "{} bytes trusted", d.len());
            assert_eq!(b64, good);
            assert_eq!(fs::read(&path).unwrap(), bytes);
        }
    }

    #[test]
    fn only_crun_gets_the_annotation() {
        assert!(delegate_honours_bpf_data(Path::new("/usr/bin/crun")));
        assert!(delegate_honours_bpf_data(Path::new("/usr/local/bin/krun")));
        assert!(!delegate_honours_bpf_data(Path::new("/usr/bin/runc")));
        assert!(!delegate_honours_bpf_data(Path::new(
            "/usr/bin/crun-wrapper"
        )));
    }

    #[test]
    fn plausibility() {
        let ret_allow = [0x06, 0, 0, 0, 0, 0, 0xff, 0x7f];
        assert!(is_plausible_bpf(&ret_allow));
        // jeq with jt past the end
        let mut jump = vec![0x15, 0, 1, 0, 0, 0, 0, 0];
        jump.extend_from_slice(&ret_allow);
        assert!(!is_plausible_bpf(&jump));
        jump[2] = 0;
        assert!(is_plausible_bpf(&jump));
        assert!(!is_plausible_bpf(&[0u8; 8 * (MAX_INSNS + 1)]));
    }

    #[test]
    fn compile_errors_are_not_cached() {
        let state = tempfile::tempdir().unwrap();
        let bad = json!({"defaultAction": "SCMP_ACT_BOGUS"});
        assert!(matches!(
            bpf_for(state.path(), &bad),
            Err(CacheError::Compile { .. })
        ));
        assert!(!entry(state.path(), &bad).exists());
    }

    fn doc(seccomp: Option<Value>, annotations: Value) -> Value {
        let mut d = json!({"ociVersion": "1.0.2", "annotations": annotations, "linux": {}});
        if let Some(s) = seccomp {
            d["linux"]["seccomp"] = s;
        }
        d
    }

    #[test]
    fn annotate_sets_and_recomputes() {
        let state = tempfile::tempdir().unwrap();
        let p = builtin_profile(false);
        let mut d = doc(Some(p.clone()), json!({"a": "b"}));
        assert_eq!(
            annotate(state.path(), &mut d).unwrap(),
            Annotated::Set { cache_hit: false }
        );
        let want = encode(&seccomp_bpf::compile(&p).unwrap());
        assert_eq!(d["annotations"][BPF_ANNOTATION], want.as_str());
        // The profile stays: crun reads flags and listenerPath from it.
        assert_eq!(d["linux"]["seccomp"], p);

        // Idempotent: a retried create writes the same document.
        let before = d.clone();
        assert_eq!(
            annotate(state.path(), &mut d).unwrap(),
            Annotated::Set { cache_hit: true }
        );
        assert_eq!(d, before);

        // Ours from an earlier attempt is replaced when the profile changed.
        d["linux"]["seccomp"] = builtin_profile(true);
        annotate(state.path(), &mut d).unwrap();
        let audit = encode(&seccomp_bpf::compile(&builtin_profile(true)).unwrap());
        assert_eq!(d["annotations"][BPF_ANNOTATION], audit.as_str());

        // ...and removed when crun has to compile after all.
        d["annotations"][FAIL_UNKNOWN_ANNOTATION] = json!("1");
        assert_eq!(
            annotate(state.path(), &mut d).unwrap(),
            Annotated::FailUnknownSyscall
        );
        assert!(d["annotations"].get(BPF_ANNOTATION).is_none());
        assert!(d["annotations"].get(OWN_BPF_DIGEST).is_none());
        d["annotations"][FAIL_UNKNOWN_ANNOTATION] = json!("0");
        assert!(matches!(
            annotate(state.path(), &mut d).unwrap(),
            Annotated::Set { .. }
        ));
    }

    #[test]
    fn annotate_leaves_foreign_and_absent() {
        let state = tempfile::tempdir().unwrap();
        // A program the policy let the workload bring: crun loads it; not ours to replace.
        let mut d = doc(
            Some(builtin_profile(false)),
            json!({ BPF_ANNOTATION: "AAAA" }),
        );
        let before = d.clone();
        assert_eq!(annotate(state.path(), &mut d).unwrap(), Annotated::Foreign);
        assert_eq!(d, before);
        // A forged digest that does not match is still foreign.
        d["annotations"][OWN_BPF_DIGEST] = json!("sha256:00");
        assert_eq!(annotate(state.path(), &mut d).unwrap(), Annotated::Foreign);

        let mut d = doc(None, json!({}));
        assert_eq!(
            annotate(state.path(), &mut d).unwrap(),
            Annotated::NoProfile
        );
        assert_eq!(d["annotations"], json!({}));

        // An uncompilable profile: error, crun compiles (and rejects) it itself.
        let mut d = doc(Some(json!({"defaultAction": "nope"})), json!({}));
        assert!(annotate(state.path(), &mut d).is_err());
        assert!(d["annotations"].get(BPF_ANNOTATION).is_none());
    }
}

//! Compiling a `linux.seccomp` object into the classic BPF program crun would load for it, so
//! that ociguard can hand crun the program ready-made (annotation `run.oci.seccomp_bpf_data`)
//! instead of crun compiling it with libseccomp on every container start.
//!
//! The translation follows crun 1.8.1's `libcrun_generate_seccomp` step by step, because the
//! point is to load *the same* filter, only sooner; the shim's integration tests compare our
//! bytes with the `seccomp.bpf` crun writes into its state directory. What crun does, and
//! therefore what this does:
//!
//! - `seccomp_init(defaultAction)`; `defaultErrnoRet`, and `errnoRet` on a rule, are accepted
//!   only with `SCMP_ACT_ERRNO`/`SCMP_ACT_TRACE`, and default to EPERM for both. No filter
//!   attribute is changed (libseccomp's defaults: optimize level 1, no TSYNC, no log).
//! - each of `architectures` is added (`SCMP_ARCH_` prefix stripped, lowercased, resolved by
//!   libseccomp's name); the native architecture stays in the filter.
//! - a rule whose action equals the default action is skipped whole; a name libseccomp does
//!   not know is skipped with a warning on crun's side.
//! - a rule without `args` is one unconditional rule per name; with `args`, at most the first
//!   six conditions are used, ANDed into one rule, unless two of them test the same argument:
//!   then each condition becomes a rule of its own (ORed).
//! - `flags` and `listenerPath` are not part of the program: crun reads them from
//!   `linux.seccomp` when it loads a filter, whether it compiled it or took it from the
//!   annotation (checked against crun 1.8.1: a bogus flag or listener fails the start either
//!   way). So the profile must stay in `config.json` next to the annotation.
//!
//! This module only computes; it never loads a filter or touches the filesystem (the program is
//! exported to an anonymous memfd).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use libseccomp::error::SeccompError;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use serde_json::{Map, Value};

/// Bumped whenever the translation below changes, so cached programs compiled by an older
/// ociguard are not reused.
const FORMAT: &str = "ociguard.seccomp-bpf/v1";

/// EPERM: crun's errno for `SCMP_ACT_ERRNO`/`SCMP_ACT_TRACE` without `errnoRet`.
const EPERM: u32 = 1;

/// crun copies at most this many conditions of a rule (the syscall has six arguments).
const MAX_ARGS: usize = 6;

/// Why a profile was not compiled. In every case the caller leaves `linux.seccomp` to crun,
/// which then accepts or rejects it itself.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("linux.seccomp: expected a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("linux.seccomp.{field}: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("linux.seccomp.syscalls[{index}]: {reason}")]
    BadRule { index: usize, reason: String },
    /// crun may accept this profile, but how it would read it is not certain enough to
    /// reproduce (e.g. a `null` where a number belongs): crun must compile it itself.
    #[error("linux.seccomp: not precompilable: {reason}")]
    Unsupported { reason: String },
    #[error("libseccomp seccomp_init: {source}")]
    Init { source: SeccompError },
    #[error("libseccomp: add architecture {arch:?}: {source}")]
    AddArch { arch: String, source: SeccompError },
    #[error("libseccomp: add rule syscalls[{index}] {name:?}: {source}")]
    AddRule {
        index: usize,
        name: String,
        source: SeccompError,
    },
    #[error("libseccomp seccomp_export_bpf: {source}")]
    Export { source: SeccompError },
    #[error("read exported BPF from a memfd: {source}")]
    Buffer { source: std::io::Error },
}

/// Compile `profile` (a `linux.seccomp` object) to the BPF program crun 1.8.1 would load for
/// it: `sock_filter` instructions, 8 bytes each, in host byte order.
///
/// Deterministic: the same profile and libseccomp give the same bytes. An error never means
/// the profile is wrong for crun; it means "let crun compile it".
pub fn compile(profile: &Value) -> Result<Vec<u8>, BpfError> {
    let found = json_type(profile);
    let profile = profile.as_object().ok_or(BpfError::NotAnObject { found })?;

    let default = default_action(profile)?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|source| BpfError::Init { source })?;

    if let Some(archs) = field(profile, "architectures")? {
        let archs = archs.as_array().ok_or_else(|| BpfError::BadField {
            field: "architectures",
            reason: format!("expected an array, found {}", json_type(archs)),
        })?;
        for arch in archs {
            let name = arch.as_str().ok_or_else(|| BpfError::BadField {
                field: "architectures",
                reason: format!("expected strings, found {}", json_type(arch)),
            })?;
            let token = resolve_arch(name).ok_or_else(|| BpfError::BadField {
                field: "architectures",
                reason: format!("unknown architecture {name:?}"),
            })?;
            // add_arch already treats EEXIST (the native architecture, or a repeat) as success,
            // as crun does.
            ctx.add_arch(token).map_err(|source| BpfError::AddArch {
                arch: name.to_owned(),
                source,
            })?;
        }
    }

    if let Some(rules) = field(profile, "syscalls")? {
        let rules = rules.as_array().ok_or_else(|| BpfError::BadField {
            field: "syscalls",
            reason: format!("expected an array, found {}", json_type(rules)),
        })?;
        for (index, rule) in rules.iter().enumerate() {
            add_rule(&mut ctx, default, index, rule)?;
        }
    }

    export(&ctx)
}

/// The cache key for [`compile`]'s output: `sha256:<hex>` over the profile's canonical JSON
/// (object keys sorted, no whitespace; crun's parse does not depend on key order), ociguard's
/// version and translation format, the libseccomp version loaded at run time and the target
/// architecture. Upgrading libseccomp or ociguard therefore invalidates every cached program.
pub fn cache_key(profile: &Value) -> String {
    let mut bytes = Vec::with_capacity(4096);
    bytes.extend_from_slice(FORMAT.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    bytes.push(0);
    match ScmpVersion::current() {
        Ok(v) => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(bytes, "libseccomp {}.{}.{}", v.major, v.minor, v.micro);
        }
        // Never seen in practice (seccomp_version() returns a static struct); a key without a
        // version still differs from every key with one.
        Err(_) => bytes.extend_from_slice(b"libseccomp ?"),
    }
    bytes.push(0);
    bytes.extend_from_slice(std::env::consts::ARCH.as_bytes());
    bytes.push(0);
    write_canonical(profile, &mut bytes);
    crate::digest::sha256(&bytes)
}

fn default_action(profile: &Map<String, Value>) -> Result<ScmpAction, BpfError> {
    let name = field(profile, "defaultAction")?
        .ok_or(BpfError::BadField {
            field: "defaultAction",
            reason: "missing".to_owned(),
        })?
        .as_str()
        .ok_or(BpfError::BadField {
            field: "defaultAction",
            reason: "expected a string".to_owned(),
        })?;
    let errno = match field(profile, "defaultErrnoRet")? {
        None => EPERM,
        Some(v) => {
            let errno = as_u32(v).ok_or_else(|| BpfError::BadField {
                field: "defaultErrnoRet",
                reason: format!("expected an unsigned 32-bit integer, found {v}"),
            })?;
            if !takes_errno(name) {
                return Err(BpfError::BadField {
                    field: "defaultErrnoRet",
                    reason: format!("errno value specified for action {name:?}"),
                });
            }
            errno
        }
    };
    action(name, errno).ok_or_else(|| BpfError::BadField {
        field: "defaultAction",
        reason: format!("unknown action {name:?}"),
    })
}

fn add_rule(
    ctx: &mut ScmpFilterContext,
    default: ScmpAction,
    index: usize,
    rule: &Value,
) -> Result<(), BpfError> {
    let bad = |reason: String| BpfError::BadRule { index, reason };
    let rule = rule
        .as_object()
        .ok_or_else(|| bad(format!("expected an object, found {}", json_type(rule))))?;
    let name = rule_field(rule, index, "action")?
        .ok_or_else(|| bad("missing action".to_owned()))?
        .as_str()
        .ok_or_else(|| bad("action: expected a string".to_owned()))?;
    let errno = match rule_field(rule, index, "errnoRet")? {
        None => EPERM,
        Some(v) => {
            let errno = as_u32(v).ok_or_else(|| {
                bad(format!(
                    "errnoRet: expected an unsigned 32-bit integer, found {v}"
                ))
            })?;
            if !takes_errno(name) {
                return Err(bad(format!("errno value specified for action {name:?}")));
            }
            errno
        }
    };
    let action = action(name, errno).ok_or_else(|| bad(format!("unknown action {name:?}")))?;
    // crun compares the encoded actions, so ERRNO(1) and ERRNO(38) differ and KILL equals
    // KILL_THREAD. Nothing else of the rule is looked at: its names and args may be anything.
    if action == default {
        return Ok(());
    }
    let names = match rule_field(rule, index, "names")? {
        None => return Ok(()),
        Some(v) => v
            .as_array()
            .ok_or_else(|| bad(format!("names: expected an array, found {}", json_type(v))))?,
    };
    let args = rule_field(rule, index, "args")?;
    // Parsed on the first name libseccomp knows, as crun does: a rule whose names are all
    // unknown is skipped before its conditions are read.
    let mut conditions: Option<Conditions> = None;
    for name in names {
        let name = name.as_str().ok_or_else(|| {
            bad(format!(
                "names: expected strings, found {}",
                json_type(name)
            ))
        })?;
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            // crun: "unknown seccomp syscall ignored" (unless the container asks it to fail via
            // `run.oci.seccomp_fail_unknown_syscall`, which the caller checks).
            continue;
        };
        let add_err = |source| BpfError::AddRule {
            index,
            name: name.to_owned(),
            source,
        };
        let Some(args) = args else {
            ctx.add_rule(action, syscall).map_err(add_err)?;
            continue;
        };
        let conds = match &conditions {
            Some(c) => c,
            None => conditions.insert(parse_conditions(args, index)?),
        };
        if conds.separate {
            for c in &conds.list {
                ctx.add_rule_conditional(action, syscall, std::slice::from_ref(c))
                    .map_err(add_err)?;
            }
        } else {
            ctx.add_rule_conditional(action, syscall, &conds.list)
                .map_err(add_err)?;
        }
    }
    Ok(())
}

/// A rule's argument conditions as crun passes them to libseccomp.
struct Conditions {
    list: Vec<ScmpArgCompare>,
    /// Two conditions test the same argument: libseccomp cannot AND those, so crun adds each
    /// condition as a rule of its own.
    separate: bool,
}

fn parse_conditions(args: &Value, index: usize) -> Result<Conditions, BpfError> {
    let bad = |reason: String| BpfError::BadRule { index, reason };
    let args = args.as_array().ok_or_else(|| {
        bad(format!(
            "args: expected an array, found {}",
            json_type(args)
        ))
    })?;
    // crun silently ignores conditions past the sixth; reproduced, since the goal is crun's
    // filter. (Six distinct arguments is all a syscall has, so only duplicate-index rules can
    // be that long.)
    let args = &args[..args.len().min(MAX_ARGS)];
    let mut seen = [false; MAX_ARGS];
    let mut separate = false;
    let mut list = Vec::with_capacity(args.len());
    for (k, arg) in args.iter().enumerate() {
        let at = |reason: String| bad(format!("args[{k}]: {reason}"));
        let arg = arg
            .as_object()
            .ok_or_else(|| at(format!("expected an object, found {}", json_type(arg))))?;
        let number = |key: &'static str, required: bool| -> Result<u64, BpfError> {
            match arg.get(key) {
                Some(Value::Null) => Err(BpfError::Unsupported {
                    reason: format!("syscalls[{index}].args[{k}].{key} is null"),
                }),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| at(format!("{key}: expected an unsigned integer, found {v}"))),
                // libocispec leaves a missing member zeroed; runtime-spec requires index and
                // value, so rather than guess, leave such a rule to crun.
                None if required => Err(BpfError::Unsupported {
                    reason: format!("syscalls[{index}].args[{k}] has no {key}"),
                }),
                None => Ok(0),
            }
        };
        let arg_index = number("index", true)?;
        let value = number("value", true)?;
        let value_two = number("valueTwo", false)?;
        let slot = usize::try_from(arg_index)
            .ok()
            .filter(|&i| i < MAX_ARGS)
            .ok_or_else(|| at(format!("invalid argument index {arg_index}")))?;
        if std::mem::replace(&mut seen[slot], true) {
            separate = true;
        }
        let op = match arg.get("op") {
            Some(Value::String(op)) => op.as_str(),
            Some(v) => return Err(at(format!("op: expected a string, found {v}"))),
            None => return Err(at("missing op".to_owned())),
        };
        // crun hands libseccomp value as datum_a and valueTwo as datum_b for every operator;
        // libseccomp reads datum_b only for MASKED_EQ (value is the mask there), so the other
        // operators ignore valueTwo, as ScmpArgCompare::new does.
        let op = match op {
            "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
            "SCMP_CMP_LT" => ScmpCompareOp::Less,
            "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
            "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
            "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
            "SCMP_CMP_GT" => ScmpCompareOp::Greater,
            "SCMP_CMP_MASKED_EQ" => ScmpCompareOp::MaskedEqual(value),
            other => return Err(at(format!("unknown operator {other:?}"))),
        };
        let datum = if matches!(op, ScmpCompareOp::MaskedEqual(_)) {
            value_two
        } else {
            value
        };
        // slot < 6, so the cast is lossless.
        list.push(ScmpArgCompare::new(slot as u32, op, datum));
    }
    Ok(Conditions { list, separate })
}

/// crun's action table. `errno` is used by ERRNO and TRACE only; like `SCMP_ACT_ERRNO(x)` in
/// seccomp.h, only its low 16 bits reach the filter.
fn action(name: &str, errno: u32) -> Option<ScmpAction> {
    let low = (errno & 0xffff) as u16;
    Some(match name.strip_prefix("SCMP_ACT_")? {
        "ERRNO" => ScmpAction::Errno(i32::from(low)),
        "TRACE" => ScmpAction::Trace(low),
        "ALLOW" => ScmpAction::Allow,
        // SCMP_ACT_KILL is libseccomp's old name for KILL_THREAD (same value).
        "KILL" | "KILL_THREAD" => ScmpAction::KillThread,
        "KILL_PROCESS" => ScmpAction::KillProcess,
        "TRAP" => ScmpAction::Trap,
        "LOG" => ScmpAction::Log,
        "NOTIFY" => ScmpAction::Notify,
        _ => return None,
    })
}

/// Whether crun accepts `errnoRet`/`defaultErrnoRet` next to this action.
fn takes_errno(name: &str) -> bool {
    name == "SCMP_ACT_ERRNO" || name == "SCMP_ACT_TRACE"
}

/// crun strips a `SCMP_ARCH_` prefix, lowercases the rest and asks libseccomp to resolve it by
/// name; these are the names libseccomp knows (the last four only from 2.6 on).
fn resolve_arch(name: &str) -> Option<ScmpArch> {
    let name = name.strip_prefix("SCMP_ARCH_").unwrap_or(name);
    let lower = name.to_ascii_lowercase();
    let arch = match lower.as_str() {
        "x86" => ScmpArch::X86,
        "x86_64" => ScmpArch::X8664,
        "x32" => ScmpArch::X32,
        "arm" => ScmpArch::Arm,
        "aarch64" => ScmpArch::Aarch64,
        "mips" => ScmpArch::Mips,
        "mips64" => ScmpArch::Mips64,
        "mips64n32" => ScmpArch::Mips64N32,
        "mipsel" => ScmpArch::Mipsel,
        "mipsel64" => ScmpArch::Mipsel64,
        "mipsel64n32" => ScmpArch::Mipsel64N32,
        "ppc" => ScmpArch::Ppc,
        "ppc64" => ScmpArch::Ppc64,
        "ppc64le" => ScmpArch::Ppc64Le,
        "s390" => ScmpArch::S390,
        "s390x" => ScmpArch::S390X,
        "parisc" => ScmpArch::Parisc,
        "parisc64" => ScmpArch::Parisc64,
        "riscv64" => ScmpArch::Riscv64,
        newer @ ("loongarch64" | "m68k" | "sh" | "sheb") => {
            let v = ScmpVersion::current().ok()?;
            if (v.major, v.minor) < (2, 6) {
                return None;
            }
            match newer {
                "loongarch64" => ScmpArch::Loongarch64,
                "m68k" => ScmpArch::M68k,
                "sh" => ScmpArch::Sh,
                _ => ScmpArch::Sheb,
            }
        }
        _ => return None,
    };
    Some(arch)
}

/// libseccomp 2.5 exports only to a file descriptor. An anonymous memfd keeps the program off
/// every filesystem and cannot fill up and block like a pipe.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>, BpfError> {
    let buffer = |source| BpfError::Buffer { source };
    let fd = nix::sys::memfd::memfd_create(
        c"ociguard-seccomp-bpf",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|errno| buffer(errno.into()))?;
    ctx.export_bpf(&fd)
        .map_err(|source| BpfError::Export { source })?;
    let mut file = File::from(fd);
    let len = file.seek(SeekFrom::End(0)).map_err(buffer)?;
    file.seek(SeekFrom::Start(0)).map_err(buffer)?;
    let mut bpf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut bpf).map_err(buffer)?;
    Ok(bpf)
}

/// A member of the profile; an explicit `null` is not something we can be sure crun reads as
/// "absent", so it is left to crun.
fn field<'a>(
    obj: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a Value>, BpfError> {
    match obj.get(key) {
        Some(Value::Null) => Err(BpfError::Unsupported {
            reason: format!("{key} is null"),
        }),
        other => Ok(other),
    }
}

fn rule_field<'a>(
    obj: &'a Map<String, Value>,
    index: usize,
    key: &'static str,
) -> Result<Option<&'a Value>, BpfError> {
    match obj.get(key) {
        Some(Value::Null) => Err(BpfError::Unsupported {
            reason: format!("syscalls[{index}].{key} is null"),
        }),
        other => Ok(other),
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compact JSON with object keys sorted, so that the key does not depend on the order an engine
/// wrote the members in.
fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
    }
}

/// A JSON string literal. Only needs to be unambiguous, not pretty.
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

    use super::*;
    use crate::seccomp::{builtin_profile, narrow, DenyAction};
    use serde_json::json;

    /// One `sock_filter`: (code, jt, jf, k), host byte order.
    fn insns(bpf: &[u8]) -> Vec<(u16, u8, u8, u32)> {
        assert_eq!(bpf.len() % 8, 0);
        bpf.chunks_exact(8)
            .map(|c| {
                (
                    u16::from_ne_bytes([c[0], c[1]]),
                    c[2],
                    c[3],
                    u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect()
    }

    const BPF_RET_K: u16 = 0x06;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;

    fn rets(bpf: &[u8]) -> Vec<u32> {
        insns(bpf)
            .into_iter()
            .filter(|i| i.0 == BPF_RET_K)
            .map(|i| i.3)
            .collect()
    }

    #[test]
    fn deterministic() {
        let mut p = builtin_profile(false);
        let a = compile(&p).unwrap();
        let b = compile(&p).unwrap();
        assert_eq!(a, b);
        assert!(!a.is_empty());
        assert_eq!(a.len() % 8, 0);
        // The last instruction of any filter returns.
        assert_eq!(insns(&a).last().unwrap().0, BPF_RET_K);

        narrow(&mut p, &["mkdir".into()], &DenyAction::Errno(1)).unwrap();
        let c = compile(&p).unwrap();
        assert_ne!(a, c);
        assert_eq!(c, compile(&p).unwrap());
        assert_eq!(cache_key(&p), cache_key(&p));
        assert_ne!(cache_key(&p), cache_key(&builtin_profile(false)));
    }

    #[test]
    fn default_and_rule_errno() {
        let allow_default = compile(&json!({"defaultAction": "SCMP_ACT_ALLOW"})).unwrap();
        assert!(rets(&allow_default).contains(&RET_ALLOW));

        // ERRNO without errnoRet is EPERM, for the default and for rules.
        let p = compile(&json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}],
        }))
        .unwrap();
        let r = rets(&p);
        assert!(r.contains(&(RET_ERRNO | 1)), "{r:x?}");
        assert!(r.contains(&(RET_ERRNO | 38)), "{r:x?}");

        // Only the low 16 bits of errnoRet reach the filter (SCMP_ACT_ERRNO masks them).
        let p = compile(&json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 0x1_0026}))
            .unwrap();
        assert!(rets(&p).contains(&(RET_ERRNO | 38)));
    }

    #[test]
    fn rule_with_default_action_is_skipped() {
        let base = compile(&json!({"defaultAction": "SCMP_ACT_ALLOW"})).unwrap();
        let same = compile(&json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            // Skipped before names or args are read, so even a bad operator is fine.
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": 0, "value": 1, "op": "BOGUS"}]}],
        }))
        .unwrap();
        assert_eq!(base, same);
        // KILL and KILL_THREAD are the same action.
        let kill = compile(&json!({"defaultAction": "SCMP_ACT_KILL"})).unwrap();
        let same = compile(&json!({
            "defaultAction": "SCMP_ACT_KILL",
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_KILL_THREAD"}],
        }))
        .unwrap();
        assert_eq!(kill, same);
    }

    #[test]
    fn unknown_syscalls_are_skipped() {
        let base = compile(&json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]}))
        .unwrap();
        let with_unknown = compile(&json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["no_such_syscall", "getpid"], "action": "SCMP_ACT_ERRNO"},
                         {"names": ["also_unknown"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 9, "value": 0, "op": "BOGUS"}]}]}))
        .unwrap();
        assert_eq!(base, with_unknown);
    }

    #[test]
    fn architectures() {
        let native = compile(&json!({"defaultAction": "SCMP_ACT_ALLOW"})).unwrap();
        // The native architecture is always there; naming it again changes nothing, in any
        // spelling crun accepts. (Rust's and libseccomp's names agree on x86_64, aarch64 and
        // riscv64, the architectures ociguard targets.)
        let name = std::env::consts::ARCH;
        for spelling in [
            format!("SCMP_ARCH_{}", name.to_uppercase()),
            name.to_owned(),
            name.to_uppercase(),
        ] {
            let p = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [spelling]});
            assert_eq!(compile(&p).unwrap(), native, "{spelling}");
        }
        for bad in ["SCMP_ARCH_NATIVE", "scmp_arch_x86", "SCMP_ARCH_VAX"] {
            let p = json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [bad]});
            assert!(
                matches!(
                    compile(&p),
                    Err(BpfError::BadField {
                        field: "architectures",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn same_index_conditions_are_ored() {
        // Two conditions on arg 0 cannot be ANDed: crun adds one rule per condition.
        let two = compile(&json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]}))
        .unwrap();
        let separate = compile(&json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]}))
        .unwrap();
        assert_eq!(two, separate);
    }

    #[test]
    fn errors() {
        let cases = [
            (json!([]), "NotAnObject"),
            (json!({}), "defaultAction"),
            (json!({"defaultAction": "SCMP_ACT_NOPE"}), "defaultAction"),
            (json!({"defaultAction": "ALLOW"}), "defaultAction"),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}),
                "defaultErrnoRet",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}),
                "defaultErrnoRet",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}),
                "syscalls",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {"names": ["getpid"], "action": "SCMP_ACT_LOG", "errnoRet": 1}]}),
                "BadRule",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"]}]}),
                "BadRule",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
                     "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}),
                "BadRule",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
                     "args": [{"index": 0, "value": 0, "op": "EQ"}]}]}),
                "BadRule",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
                     "args": [{"index": 0, "op": "SCMP_CMP_EQ"}]}]}),
                "Unsupported",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": null}),
                "Unsupported",
            ),
        ];
        for (profile, want) in cases {
            let err = compile(&profile).unwrap_err();
            let got = format!("{err:?}");
            assert!(got.contains(want), "{profile}: {got}");
        }
    }

    #[test]
    fn cache_key_ignores_member_order_only() {
        let a: Value = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a","b"],"action":"SCMP_ACT_LOG"}]}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"syscalls":[{"action":"SCMP_ACT_LOG","names":["a","b"]}],"defaultAction":"SCMP_ACT_ALLOW"}"#,
        )
        .unwrap();
        let c: Value = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["b","a"],"action":"SCMP_ACT_LOG"}]}"#,
        )
        .unwrap();
        assert_eq!(cache_key(&a), cache_key(&b));
        assert_ne!(cache_key(&a), cache_key(&c));
        assert!(cache_key(&a).starts_with("sha256:"));

        let mut out = Vec::new();
        write_canonical(&json!({"b": [1, "x\"\n"], "a": null}), &mut out);
        assert_eq!(out, br#"{"a":null,"b":[1,"x\"\u000a"]}"#);
    }
}

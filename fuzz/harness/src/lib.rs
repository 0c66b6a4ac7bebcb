//! What each fuzz target does with one input: feed it to a parser of untrusted bytes and check
//! invariants beyond "no panic". The cargo-fuzz crate (`fuzz/`, nightly, outside the workspace)
//! calls these; so do the stable regression tests (`tests/regressions.rs`), on every kept
//! crasher under `fuzz/regressions/<target>/`, so a fixed bug stays fixed in `make test`.
//!
//! It must never do I/O beyond what the parsers themselves do (none of them touch files).
// A check that fails must panic: that is how a fuzzer learns of it. Tests' rules apply here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::Path;
use std::sync::OnceLock;

use ociguard_monitor::nflog;
use ociguard_monitor::protocol::{read_frame, Request, Response, MAX_REQUEST};
use ociguard_policy::generate;
use ociguard_policy::load::parse_policy;
use ociguard_policy::profile::{Profile, FORMAT};
use ociguard_policy::select::{self, Facts, CRIO_ANNOTATIONS, CRIO_LABELS};
use ociguard_policy::{decide, rewrite, spec, PolicySet};
use serde_json::json;

/// One fuzz target's check of one input (it panics when an invariant does not hold).
pub type Check = fn(&[u8]);

/// Every target by the name of its file under `fuzz/fuzz_targets/` and `fuzz/regressions/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("config_json", config_json),
    ("policy_toml", policy_toml),
    ("hook_state", hook_state),
    ("monitor_protocol", monitor_protocol),
    ("crio_labels", crio_labels),
    ("nflog", nflog),
    ("profile_decode", profile_decode),
];

/// The policies shipped in `deploy/policies/`, as `ociguard create` would load them.
fn deploy_policies() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        let files = [
            (
                "batch.toml",
                include_str!("../../../deploy/policies/batch.toml"),
            ),
            (
                "default.toml",
                include_str!("../../../deploy/policies/default.toml"),
            ),
            (
                "payments.toml",
                include_str!("../../../deploy/policies/payments.toml"),
            ),
            (
                "sandbox.toml",
                include_str!("../../../deploy/policies/sandbox.toml"),
            ),
        ];
        let files: Vec<_> = files
            .iter()
            .map(|(name, text)| (Path::new("/etc/ociguard/policies").join(name), *text))
            .collect();
        PolicySet::from_texts(files.iter().map(|(p, t)| (p.as_path(), *t)))
            .expect("deploy/policies load")
    })
}

/// `config.json` as `ociguard create` reads it: validate, choose a policy, rewrite. A config
/// that was decided once must decide again to the same policy and the same bytes (a retried
/// create changes nothing), and the rewritten document must still be a valid config.
pub fn config_json(data: &[u8]) {
    let path = Path::new("/run/bundle/config.json");
    let set = deploy_policies();
    // What `exec --process` reads, and the other readers of the same document.
    let _ = spec::parse_process(data, path);
    let first = match decide(data, path, set) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = ociguard_policy::apparmor::secret_mounts(&first.document);
    let _ = ociguard_policy::egress::network_namespace(&first.document);
    // `ociguardctl explain` prints the decision.
    serde_json::to_vec(&first.decision).expect("a decision serialises");
    let bytes = first.to_bytes();
    let again = decide(&bytes, path, set).expect("a rewritten config decides again");
    assert_eq!(again.decision.policy, first.decision.policy);
    assert_eq!(again.decision.policy_digest, first.decision.policy_digest);
    assert_eq!(
        again.to_bytes(),
        bytes,
        "a second create must not change the config again"
    );
}

/// One policy file: parse and validate; a valid one must digest the same when parsed again,
/// load as a set, and rewrite a plain config (and one with annotations) into a valid config,
/// idempotently.
pub fn policy_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/ociguard/policies/fuzz.toml");
    let loaded = match parse_policy(path, text) {
        Ok(p) => p,
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused policy says why");
            for e in errors {
                let _ = e.to_string();
            }
            return;
        }
    };
    let reparsed = parse_policy(path, text).expect("the same text parses again");
    assert_eq!(reparsed.digest, loaded.digest);
    let _ = PolicySet::from_texts([(path, text)]);
    let configs = [
        json!({"ociVersion": "1.0.2",
               "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/"},
               "root": {"path": "rootfs"}}),
        json!({"ociVersion": "1.0.2",
               "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/",
                           "capabilities": {"bounding": ["CAP_SYS_ADMIN", "CAP_NET_RAW"],
                                            "effective": ["CAP_SYS_ADMIN"]}},
               "root": {"path": "rootfs"},
               "linux": {"namespaces": [{"type": "network"}, {"type": "mount"}],
                         "seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
                                     "syscalls": [{"names": ["read", "write"],
                                                   "action": "SCMP_ACT_ALLOW"}]}},
               "annotations": {"io.kubernetes.cri.image-name": "docker.io/library/nginx:1",
                               "io.kubernetes.pod.namespace": "default",
                               "org.example/profile": "x"}}),
    ];
    for config in configs {
        let facts = Facts::from_spec(&config);
        let mut doc = config;
        if rewrite::apply(&mut doc, &loaded, &facts).is_err() {
            continue;
        }
        let bytes = spec::to_bytes(&doc);
        spec::parse_config(&bytes, Path::new("config.json"))
            .expect("a rewritten config is a valid config");
        rewrite::apply(&mut doc, &loaded, &facts).expect("a rewritten config rewrites again");
        assert_eq!(
            spec::to_bytes(&doc),
            bytes,
            "a second rewrite must change nothing"
        );
    }
}

/// The OCI state a runtime writes to `ociguard-hook`'s stdin, and what the hook reads from its
/// annotations (engine, Kubernetes identity).
pub fn hook_state(data: &[u8]) {
    use ociguard_hooks::{collect, kubernetes, state};
    let s = match state::parse(data) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(!s.id.is_empty());
    assert!(s.bundle.is_absolute());
    assert_ne!(s.pid, Some(0));
    let _ = collect::engine(&s.annotations, &s.bundle.to_string_lossy());
    let _ = kubernetes::from_spec(&s.annotations, None);
}

/// The monitor's socket protocol: the bytes a peer sends, split into lines as the server does
/// (the first byte picks the reader's buffer size, so lines straddle buffers), each line a
/// request. A request that parses must re-serialise and parse back equal; the answer to one
/// that does not must still be one line.
pub fn monitor_protocol(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut reader = BufReader::with_capacity(usize::from(first % 64) + 1, rest);
    // A small limit, so that the fuzzer reaches it.
    let limit = if first & 0x80 != 0 { 64 } else { MAX_REQUEST };
    while let Ok(Some(line)) = read_frame(&mut reader, limit) {
        assert!(
            line.len() < limit,
            "a frame is at most the limit, newline included"
        );
        assert!(!line.contains(&b'\n'));
        match serde_json::from_slice::<Request>(&line) {
            Ok(req) => {
                let _ = req.name();
                let bytes = serde_json::to_vec(&req).expect("a request serialises");
                let back: Request =
                    serde_json::from_slice(&bytes).expect("a serialised request parses");
                assert_eq!(back, req, "{}", String::from_utf8_lossy(&bytes));
            }
            Err(e) => {
                let answer = Response::error(format!("bad request: {e}")).to_line();
                assert_eq!(answer.iter().filter(|&&b| b == b'\n').count(), 1);
                assert!(answer.ends_with(b"\n"));
            }
        }
        // ociguardctl reads answers the same way.
        if let Ok(resp) = serde_json::from_slice::<Response>(&line) {
            let back: Response =
                serde_json::from_slice(&resp.to_line()).expect("an answer line parses");
            assert_eq!(back, resp);
        }
    }
}

/// Most that the reason a CRI-O JSON annotation was refused may say, whatever it holds (two
/// annotations, each reason a few hundred bytes: `kubernetes_map` promises a bounded message).
pub const MAX_UNRESOLVED: usize = 4096;

/// CRI-O's `io.kubernetes.cri-o.Labels`/`Annotations` JSON, as the shim reads it into facts (and
/// chooses a policy by them) and as the hook reads it for the Kubernetes identity.
pub fn crio_labels(data: &[u8]) {
    let value = String::from_utf8_lossy(data).into_owned();
    let (labels, annotations) = match value.split_once('\u{0}') {
        Some((l, a)) => (l.to_owned(), a.to_owned()),
        None => (value.clone(), value),
    };
    let config = json!({"ociVersion": "1.0.2",
        "annotations": {CRIO_LABELS: labels, CRIO_ANNOTATIONS: annotations}});
    let facts = Facts::from_spec(&config);
    if let Some(why) = &facts.kubernetes_metadata_unresolved {
        assert!(why.len() <= MAX_UNRESOLVED, "{} bytes", why.len());
    }
    serde_json::to_vec(&facts).expect("facts serialise");
    let _ = select::select(deploy_policies(), &facts);
    let ann: BTreeMap<String, String> = [(CRIO_LABELS.to_owned(), labels)].into();
    let _ = ociguard_hooks::kubernetes::from_spec(&ann, None);
}

/// Datagrams from an NFLOG socket (and the netlink answers the hook reads after installing
/// egress rules). Every message is counted at most once.
pub fn nflog(data: &[u8]) {
    let d = nflog::parse_datagram(data);
    let messages = data.len() / 16 + 1;
    let counted = d.denials.len() + d.observed.len() + d.foreign + d.malformed + d.answers.len();
    assert!(
        counted <= messages,
        "{counted} results from {messages} messages"
    );
    for denial in d.denials.iter().chain(&d.observed) {
        let _ = denial.to_string();
    }
    if let Some(denial) = nflog::decode_ip(data) {
        let _ = denial.to_string();
    }
    let _ = ociguard_hooks::nfnl::answers(data);
}

/// A stored behaviour profile. Odd first byte: the rest is a document as found on disk; even:
/// the rest is a profile body, wrapped with its true checksum (else the fuzzer would never get
/// past the SHA-256). A profile that decodes must encode and decode back equal.
pub fn profile_decode(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let doc;
    let bytes = if first % 2 == 1 {
        rest
    } else {
        let Ok(body) = std::str::from_utf8(rest) else {
            return;
        };
        doc = format!(
            "{{\"format\":{FORMAT},\"sha256\":\"{}\",\"profile\":{body}}}",
            ociguard_policy::digest::sha256(body.as_bytes())
        );
        doc.as_bytes()
    };
    let Ok(profile) = Profile::decode(bytes) else {
        return;
    };
    let encoded = profile.encode();
    let back = Profile::decode(&encoded).expect("an encoded profile decodes");
    assert_eq!(back, profile);
    // `ociguardctl policy generate`: whatever the profile recorded (image names come from the
    // container's annotations), the policy written from it is one valid policy of that name.
    let name = generate::default_name(&profile);
    let opts = generate::Options {
        name: &name,
        now: 0,
        enforcers: None,
    };
    let text = match generate::policy(std::slice::from_ref(&profile), &opts) {
        Ok(text) => text,
        Err(generate::GenerateError::NoImage) => {
            assert!(profile.subject.image.is_none() && profile.subject.digest.is_none());
            return;
        }
        Err(e) => panic!("a default name is a valid name: {e}"),
    };
    match parse_policy(Path::new("/etc/ociguard/policies/learned.toml"), &text) {
        Ok(p) => {
            assert_eq!(p.name(), name);
            // Only what was recorded is allowed, each as itself (never widened to a glob).
            for rule in &p.policy.behavior.allowed_exec {
                assert!(profile.execs.contains_key(rule.get_ref()), "{text}");
            }
        }
        Err(e) => panic!("generated policy does not load: {e:?}\n{text}"),
    }
}

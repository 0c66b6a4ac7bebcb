//! Loading and validating the policy directory.
//!
//! Every `*.toml` file is one policy. All files are read and all problems are reported together
//! (so `ociguardctl policy check` can list them), each with `file:line:column`. A directory that
//! does not exist is an empty set: the built-in default policy applies.
//!
//! The directory and every file must be trusted ([`crate::trust`]): a policy anyone could have
//! written would let them choose every container's confinement.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Capability;
use toml::Spanned;

use crate::annotations;
use crate::capabilities::capability_name;
use crate::digest;
use crate::location::Location;
use crate::model::{Policy, DEFAULT_POLICY};
use crate::seccomp;
use crate::set::{LoadedPolicy, PolicySet};
use crate::trust::{self, Kind, Trust, TrustError};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("read policy directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The directory or a policy file could have been written by someone untrusted (the
    /// source names the component and the fix).
    #[error("{source}")]
    Untrusted { path: PathBuf, source: TrustError },
    #[error("{location}: {message}")]
    Parse { location: Location, message: String },
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    #[error("{location}: policy name {name:?} is already used by {first}")]
    DuplicateName {
        location: Location,
        name: String,
        first: PathBuf,
    },
    #[error("{location}: policy {name:?} has the same [match] and priority as {other:?} ({other_path}): no container could tell them apart")]
    Overlap {
        location: Location,
        name: String,
        other: String,
        other_path: PathBuf,
    },
}

impl PolicyError {
    pub fn location(&self) -> Option<&Location> {
        match self {
            PolicyError::Parse { location, .. }
            | PolicyError::Invalid { location, .. }
            | PolicyError::DuplicateName { location, .. }
            | PolicyError::Overlap { location, .. } => Some(location),
            PolicyError::ReadDir { .. }
            | PolicyError::Read { .. }
            | PolicyError::Untrusted { .. } => None,
        }
    }

    /// The file (or directory) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PolicyError::Parse { location, .. }
            | PolicyError::Invalid { location, .. }
            | PolicyError::DuplicateName { location, .. }
            | PolicyError::Overlap { location, .. } => &location.path,
            PolicyError::ReadDir { path, .. }
            | PolicyError::Read { path, .. }
            | PolicyError::Untrusted { path, .. } => path,
        }
    }
}

/// Every problem found while loading a directory.
#[derive(Debug)]
pub struct LoadErrors(pub Vec<PolicyError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

impl PolicySet {
    /// Load every `*.toml` in `dir` (hidden files and other extensions, e.g. editor backups or
    /// `.dpkg-old`, are ignored). `dir` and every file must be trusted by `trust`.
    ///
    /// This runs on every container create, so the directory's path is walked once; a plain
    /// file in it is only `fstat`ed on the descriptor it is read from (the trusted directory
    /// above it means nobody else can put another file under its name), and only a symlink is
    /// walked to where it leads (Kubernetes ConfigMap volumes: `x.toml -> ..data/x.toml`).
    pub fn load_dir(dir: &Path, trust: &Trust) -> Result<PolicySet, LoadErrors> {
        let untrusted = |source| {
            LoadErrors(vec![PolicyError::Untrusted {
                path: dir.to_owned(),
                source,
            }])
        };
        let resolved = match trust.check_path(dir, Kind::Dir) {
            Ok(resolved) => resolved,
            // Only once every existing component above it passed (see `check_path`).
            Err(e) if e.is_missing() => return Ok(PolicySet::default()),
            Err(source) => return Err(untrusted(source)),
        };
        // Read the directory the check resolved, so what is listed is what was checked even if
        // `dir` is a symlink; entries are still named under `dir`, as the operator wrote it.
        let entries = match std::fs::read_dir(&resolved) {
            Ok(entries) => entries,
            Err(source) => {
                return Err(LoadErrors(vec![PolicyError::ReadDir {
                    path: dir.to_owned(),
                    source,
                }]))
            }
        };
        let mut paths = Vec::new();
        let mut errors = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => {
                    let name = entry.file_name();
                    let shown = name.to_string_lossy();
                    if shown.starts_with('.') || !shown.ends_with(".toml") {
                        continue;
                    }
                    // From the directory entry (d_type): no stat for the common case.
                    let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
                    paths.push((dir.join(&name), is_link));
                }
                Err(source) => errors.push(PolicyError::ReadDir {
                    path: dir.to_owned(),
                    source,
                }),
            }
        }
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for (path, is_link) in paths {
            match read_trusted(&resolved, &path, is_link, trust) {
                Ok(text) => files.push((path, text)),
                Err(e) => errors.push(e),
            }
        }
        match Self::from_texts(files.iter().map(|(p, t)| (p.as_path(), t.as_str()))) {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(LoadErrors(errors)),
            Err(LoadErrors(more)) => {
                errors.extend(more);
                Err(LoadErrors(errors))
            }
        }
    }

    /// Build a set from `(path, text)` pairs (the path is only used for messages).
    pub fn from_texts<'a>(
        files: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> Result<PolicySet, LoadErrors> {
        let mut errors = Vec::new();
        let mut loaded: Vec<(LoadedPolicy, &'a str)> = Vec::new();
        for (path, text) in files {
            match parse_policy(path, text) {
                Ok(p) => loaded.push((p, text)),
                Err(mut e) => errors.append(&mut e),
            }
        }
        // Cross-file checks.
        for (i, (p, text)) in loaded.iter().enumerate() {
            let Some(path) = p.source.as_deref() else {
                continue;
            };
            for (q, _) in &loaded[..i] {
                let q_path = q.source.clone().unwrap_or_default();
                if q.name() == p.name() {
                    errors.push(PolicyError::DuplicateName {
                        location: Location::from_span(path, text, Some(p.policy.name.span())),
                        name: p.name().to_owned(),
                        first: q_path,
                    });
                } else if p.policy.priority == q.policy.priority
                    && p.policy.selector == q.policy.selector
                {
                    errors.push(PolicyError::Overlap {
                        location: Location::from_span(path, text, Some(p.policy.name.span())),
                        name: p.name().to_owned(),
                        other: q.name().to_owned(),
                        other_path: q_path,
                    });
                }
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        let mut set = PolicySet::default();
        for (p, _) in loaded {
            if p.name() == DEFAULT_POLICY {
                set.default = p;
            } else {
                set.policies.push(p);
            }
        }
        Ok(set)
    }
}

/// Read one policy file of the checked directory `dir` (resolved), named `path` in errors.
fn read_trusted(
    dir: &Path,
    path: &Path,
    is_link: bool,
    trust: &Trust,
) -> Result<String, PolicyError> {
    let untrusted = |source| PolicyError::Untrusted {
        path: path.to_owned(),
        source,
    };
    let name = path.file_name().unwrap_or_default();
    let open_path = if is_link {
        // Where the walk ends is a real file below trusted directories: opened without
        // following, and its descriptor checked like any other.
        trust
            .check_entry(dir, name, path, Kind::File)
            .map_err(untrusted)?
    } else {
        // Opened in the directory that was checked and listed (`dir`, resolved), never by the
        // path as configured: when the policy directory is a symlink that is replaced while
        // this set loads (deploy/kubernetes/sync-policies.sh swaps one to publish a new set),
        // re-resolving it per file could read some files of the old set and some of the new,
        // a set nobody validated, and from a directory whose trust was not checked.
        dir.join(name)
    };
    let mut file = trust::open_regular(&open_path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    trust.check_file(path, &file).map_err(untrusted)?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
    Ok(text)
}

/// Parse and validate one file; all problems in it are returned.
pub fn parse_policy(path: &Path, text: &str) -> Result<LoadedPolicy, Vec<PolicyError>> {
    let mut policy: Policy = toml::from_str(text).map_err(|e| {
        vec![PolicyError::Parse {
            location: Location::from_span(path, text, e.span()),
            message: e.message().trim_end().to_owned(),
        }]
    })?;
    let mut errors = Vec::new();
    let mut invalid = |span: std::ops::Range<usize>, message: String| {
        errors.push(PolicyError::Invalid {
            location: Location::from_span(path, text, Some(span)),
            message,
        })
    };

    let name = policy.name.get_ref();
    if !valid_name(name) {
        invalid(
            policy.name.span(),
            format!("policy name {name:?} must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"),
        );
    }
    let is_default = name == DEFAULT_POLICY;
    if is_default && !policy.selector.is_empty() {
        invalid(
            policy.name.span(),
            "the default policy applies when nothing else matches; it must not have a [match] section".to_owned(),
        );
    }
    if !is_default && policy.selector.is_empty() {
        invalid(
            policy.name.span(),
            format!("policy {name:?} has an empty [match] and would match every container; name it \"default\" or add selectors"),
        );
    }
    for glob in &policy.selector.images {
        if let Err(why) = check_glob(glob.get_ref()) {
            invalid(
                glob.span(),
                format!("image glob {:?}: {why}", glob.get_ref()),
            );
        }
    }
    for glob in policy
        .selector
        .kubernetes_namespaces
        .iter()
        .chain(&policy.selector.service_accounts)
    {
        if let Err(why) = check_glob(glob.get_ref()) {
            invalid(glob.span(), format!("glob {:?}: {why}", glob.get_ref()));
        }
    }
    for digest in &policy.selector.digests {
        let d = digest.get_ref();
        let ok = d.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        if !ok {
            invalid(
                digest.span(),
                format!("image digest {d:?} must be sha256: followed by 64 lowercase hex digits"),
            );
        }
    }
    for (key, glob) in &policy.selector.labels {
        if key.is_empty() {
            invalid(glob.span(), "empty label key".to_owned());
        }
        if let Err(why) = check_glob(glob.get_ref()) {
            invalid(
                glob.span(),
                format!("label glob {:?}: {why}", glob.get_ref()),
            );
        }
        if !policy.selectable_by_label {
            invalid(
                glob.span(),
                format!(
                    "policy {name:?} has selectable_by_label = false but matches on label {key:?}"
                ),
            );
        }
    }
    // Pod labels: no `selectable_by_label` check, they are not written by the image's builder
    // (see `Selector::kubernetes_labels`).
    for (key, glob) in &policy.selector.kubernetes_labels {
        if key.is_empty() {
            invalid(glob.span(), "empty kubernetes label key".to_owned());
        } else if key == crate::select::KUBE_NAMESPACE_LABEL {
            invalid(
                glob.span(),
                format!("kubernetes label {key:?}: match the namespace with kubernetes_namespaces, which prefers the engine's own annotation to this record"),
            );
        }
        if let Err(why) = check_glob(glob.get_ref()) {
            invalid(
                glob.span(),
                format!("kubernetes label glob {:?}: {why}", glob.get_ref()),
            );
        }
    }
    for (key, glob) in &policy.selector.annotations {
        if key.is_empty() || key.starts_with(annotations::OWN_PREFIX) {
            invalid(
                glob.span(),
                format!("annotation key {key:?} cannot be matched on (empty, or written by ociguard itself)"),
            );
        }
        if let Err(why) = check_glob(glob.get_ref()) {
            invalid(
                glob.span(),
                format!("annotation glob {:?}: {why}", glob.get_ref()),
            );
        }
    }
    for sys in &policy.seccomp.deny {
        if !seccomp::is_known_syscall(sys.get_ref()) {
            invalid(sys.span(), format!("unknown syscall {:?}", sys.get_ref()));
        }
    }
    let mut drop_all = false;
    let mut drop = Vec::new();
    for cap in &mut policy.process.drop_capabilities {
        if cap.get_ref().eq_ignore_ascii_case("ALL") {
            drop_all = true;
            *cap = Spanned::new(cap.span(), "ALL".to_owned());
            continue;
        }
        match serde_json::from_value::<Capability>(serde_json::Value::String(cap.get_ref().clone()))
        {
            Ok(c) => {
                drop.push(c);
                *cap = Spanned::new(cap.span(), capability_name(c));
            }
            Err(_) => invalid(
                cap.span(),
                format!("unknown capability {:?}", cap.get_ref()),
            ),
        }
    }
    for entry in &policy.annotations.allow_unsafe {
        if !annotations::is_unsafe_entry(entry.get_ref()) {
            invalid(
                entry.span(),
                format!(
                    "{:?} is not an annotation ociguard strips (known: {})",
                    entry.get_ref(),
                    annotations::UNSAFE.join(", ")
                ),
            );
        }
    }
    for (span, message) in crate::behavior::validate(&policy) {
        invalid(span, message);
    }
    for (span, message) in crate::apparmor::validate(&policy) {
        invalid(span, message);
    }
    for (span, message) in crate::egress::validate(&policy) {
        invalid(span, message);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let digest = digest::policy_digest(&policy);
    Ok(LoadedPolicy {
        policy,
        source: Some(path.to_owned()),
        digest,
        drop_all_capabilities: drop_all,
        drop_capabilities: drop,
    })
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// glob-match treats malformed patterns as "no match"; reject them at load time instead.
fn check_glob(glob: &str) -> Result<(), &'static str> {
    if glob.is_empty() {
        return Err("empty pattern");
    }
    let (mut brackets, mut braces) = (0i32, 0i32);
    let mut escaped = false;
    for c in glob.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            '{' => braces += 1,
            '}' => braces -= 1,
            _ => {}
        }
        if brackets < 0 || braces < 0 || brackets > 1 {
            return Err("unbalanced [] or {}");
        }
    }
    if brackets != 0 || braces != 0 || escaped {
        return Err("unbalanced [] or {}, or trailing backslash");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::set::builtin_default;

    fn load(files: &[(&str, &str)]) -> Result<PolicySet, LoadErrors> {
        PolicySet::from_texts(files.iter().map(|(p, t)| (Path::new(*p), *t)))
    }

    #[test]
    fn a_valid_policy() {
        let set = load(&[(
            "/p/web.toml",
            r#"
name = "web"
mode = "enforce"
[match]
images = ["docker.io/library/nginx:*"]
annotations = { "io.kubernetes.pod.namespace" = "web-*" }
[seccomp]
deny = ["mkdir", "mkdirat"]
errno = "EACCES"
[process]
drop_capabilities = ["net_raw", "CAP_SYS_CHROOT"]
no_new_privileges = true
[annotations]
allow_unsafe = ["run.oci.keep_original_groups"]
"#,
        )])
        .unwrap();
        let p = &set.policies[0];
        assert_eq!(p.name(), "web");
        assert_eq!(p.drop_capabilities.len(), 2);
        assert_eq!(
            p.policy.process.drop_capabilities[0].get_ref(),
            "CAP_NET_RAW"
        );
        assert!(p.digest.starts_with("sha256:") && p.digest.len() == 71);
        assert_eq!(set.default.source, None);
    }

    fn one_error(text: &str) -> String {
        let errs = load(&[("/p/x.toml", text)]).unwrap_err();
        assert_eq!(errs.0.len(), 1, "{errs}");
        errs.to_string()
    }

    #[test]
    fn errors_carry_file_and_line() {
        let e = one_error("name = \"x\"\n[match]\nimages=[\"a\"]\n[seccomp]\ndeny = [\"mkdir\", \"nosuchcall\"]\n");
        assert!(e.starts_with("/p/x.toml:5:"), "{e}");
        assert!(e.contains("unknown syscall \"nosuchcall\""), "{e}");

        let e = one_error(
            "name = \"x\"\n[match]\nimages=[\"a\"]\n[process]\ndrop_capabilities = [\"CAP_FLY\"]\n",
        );
        assert!(e.starts_with("/p/x.toml:5:"), "{e}");
        assert!(e.contains("unknown capability"), "{e}");

        let e = one_error("name = \"x\"\nmode = \"permissive\"\n");
        assert!(e.starts_with("/p/x.toml:2:"), "{e}");

        let e = one_error("name = \"x\"\n[seccomp]\ndenyy = []\n");
        assert!(e.starts_with("/p/x.toml:3:"), "{e}");
        assert!(e.contains("denyy"), "{e}");

        let e = one_error("name = \"x\"\n[match\n");
        assert!(e.starts_with("/p/x.toml:2:"), "{e}");

        let e = one_error("name = \"Bad Name\"\n[match]\nimages=[\"a\"]\n");
        assert!(e.contains("policy name"), "{e}");

        let e = one_error("name = \"x\"\n");
        assert!(e.contains("empty [match]"), "{e}");

        let e = one_error("name = \"default\"\n[match]\nimages = [\"a\"]\n");
        assert!(e.contains("must not have a [match]"), "{e}");

        let e = one_error("name = \"x\"\n[match]\nimages = [\"a[\"]\n");
        assert!(e.contains("unbalanced"), "{e}");

        let e =
            one_error("name = \"x\"\n[match]\nannotations = { \"org.ociguard.policy\" = \"*\" }\n");
        assert!(e.contains("written by ociguard"), "{e}");

        let e = one_error(
            "name = \"x\"\n[match]\nimages = [\"a\"]\n[annotations]\nallow_unsafe = [\"foo\"]\n",
        );
        assert!(e.starts_with("/p/x.toml:5:"), "{e}");
    }

    #[test]
    fn kubernetes_label_selectors_are_validated_with_their_line() {
        let e = one_error("name = \"x\"\n[match]\nkubernetes_labels = { \"\" = \"a\" }\n");
        assert!(e.starts_with("/p/x.toml:3:"), "{e}");
        assert!(e.contains("empty kubernetes label key"), "{e}");

        let e = one_error(
            "name = \"x\"\n[match]\nimages = [\"a\"]\n\n[match.kubernetes_labels]\napp = \"web\"\ntier = \"a[\"\n",
        );
        assert!(e.starts_with("/p/x.toml:7:"), "{e}");
        assert!(
            e.contains("kubernetes label glob \"a[\": unbalanced"),
            "{e}"
        );

        let e = one_error(
            "name = \"x\"\n[match]\nkubernetes_labels = { \"io.kubernetes.pod.namespace\" = \"kube-system\" }\n",
        );
        assert!(e.starts_with("/p/x.toml:3:"), "{e}");
        assert!(e.contains("kubernetes_namespaces"), "{e}");

        let e = one_error("name = \"x\"\n[match]\nkubernetes_label = { app = \"a\" }\n");
        assert!(e.starts_with("/p/x.toml:3:"), "{e}");

        let e = one_error("name = \"default\"\n[match]\nkubernetes_labels = { app = \"a\" }\n");
        assert!(e.contains("must not have a [match]"), "{e}");

        // Alone it is a non-empty [match]; selectable_by_label = false does not forbid it.
        let set = load(&[(
            "/p/x.toml",
            "name = \"x\"\nselectable_by_label = false\n[match]\nkubernetes_labels = { app = \"*\" }\n",
        )])
        .unwrap();
        assert_eq!(
            set.policies[0].policy.selector.kubernetes_labels["app"].get_ref(),
            "*"
        );
    }

    #[test]
    fn identical_kubernetes_label_selectors_overlap() {
        let a = "name = \"a\"\n[match]\nkubernetes_labels = { app = \"web\" }\n";
        let b = "name = \"b\"\n[match]\nkubernetes_labels = { app = \"web\" }\n";
        let errs = load(&[("/p/a.toml", a), ("/p/b.toml", b)]).unwrap_err();
        assert!(matches!(errs.0[0], PolicyError::Overlap { .. }), "{errs}");
        // The same condition on image labels is a different selector.
        let c = "name = \"c\"\n[match]\nlabels = { app = \"web\" }\n";
        assert!(load(&[("/p/a.toml", a), ("/p/c.toml", c)]).is_ok());
        // And it is part of the digest when present.
        let pa = parse_policy(Path::new("/a"), a).unwrap();
        let pc = parse_policy(Path::new("/a"), &c.replace("\"c\"", "\"a\"")).unwrap();
        assert_ne!(pa.digest, pc.digest);
    }

    #[test]
    fn all_errors_of_a_file_are_reported() {
        let errs = load(&[(
            "/p/x.toml",
            "name = \"x\"\n[match]\nimages=[\"a\"]\n[seccomp]\ndeny = [\"nope1\", \"nope2\"]\n",
        )])
        .unwrap_err();
        assert_eq!(errs.0.len(), 2);
    }

    #[test]
    fn duplicate_names_and_overlaps_are_load_errors() {
        let a = "name = \"a\"\n[match]\nimages = [\"x/*\"]\n";
        let errs = load(&[("/p/a.toml", a), ("/p/a2.toml", a)]).unwrap_err();
        assert!(
            matches!(errs.0[0], PolicyError::DuplicateName { .. }),
            "{errs}"
        );
        assert!(errs.to_string().contains("/p/a.toml"));

        let b = "name = \"b\"\n[match]\nimages = [\"x/*\"]\n";
        let errs = load(&[("/p/a.toml", a), ("/p/b.toml", b)]).unwrap_err();
        assert!(matches!(errs.0[0], PolicyError::Overlap { .. }), "{errs}");

        // Different priority: resolvable, fine.
        let c = "name = \"c\"\npriority = 1\n[match]\nimages = [\"x/*\"]\n";
        assert!(load(&[("/p/a.toml", a), ("/p/c.toml", c)]).is_ok());
    }

    #[test]
    fn digest_ignores_formatting_but_not_content() {
        let a = parse_policy(Path::new("/a"), "name = \"a\"\n[match]\nimages = [\"x\"]\n").unwrap();
        let b = parse_policy(
            Path::new("/b"),
            "# comment\nname=\"a\"\n\n[match]\nimages=[ \"x\" ]\n",
        )
        .unwrap();
        let c = parse_policy(Path::new("/c"), "name = \"a\"\n[match]\nimages = [\"y\"]\n").unwrap();
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }

    /// Adding selector fields must not change the digest of a policy that does not use them
    /// (`pinned_digests` and decision records name policies by digest).
    #[test]
    fn digest_of_existing_policies_is_stable() {
        let p = parse_policy(
            Path::new("/p/web.toml"),
            "name = \"web\"\npriority = 3\n[match]\nimages = [\"reg/web:*\"]\nlabels = { tier = \"web\" }\nannotations = { team = \"*\" }\nkubernetes_namespaces = [\"web-*\"]\n[process]\nno_new_privileges = true\n",
        )
        .unwrap();
        assert_eq!(
            p.digest,
            "sha256:8e8631bd6a2747e84d7a159150aff462ab124032fba3c0a1ac006c8174fe9eba"
        );
        assert_eq!(
            builtin_default().digest,
            "sha256:b65873033ccfb3c3d8a54612cc3b8572a1eda00d85454e6379bd0b96bbb0ddca"
        );
        let bytes = crate::digest::canonical_policy_bytes(&p.policy);
        assert!(!String::from_utf8_lossy(&bytes).contains("kubernetes_labels"));
    }

    #[test]
    fn directory_loading() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("default.toml"),
            "name = \"default\"\n[process]\nno_new_privileges = true\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("web.toml"),
            "name = \"web\"\n[match]\nimages=[\"a\"]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("web.toml~"), "garbage").unwrap();
        std::fs::write(dir.path().join(".hidden.toml"), "garbage").unwrap();
        let trust = Trust::new(None);
        let set = PolicySet::load_dir(dir.path(), &trust).unwrap();
        assert_eq!(set.policies.len(), 1);
        assert!(set.default.policy.process.no_new_privileges);
        assert!(PolicySet::load_dir(&dir.path().join("missing"), &trust)
            .unwrap()
            .policies
            .is_empty());
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skip: not root");
        false
    }

    const WEB: &str = "name = \"web\"\n[match]\nimages=[\"a\"]\n";

    #[test]
    fn untrusted_files_are_load_errors_among_the_others() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (bad, theirs, broken) = (
            dir.path().join("bad.toml"),
            dir.path().join("theirs.toml"),
            dir.path().join("broken.toml"),
        );
        std::fs::write(&bad, WEB).unwrap();
        chmod(&bad, 0o666);
        std::fs::write(&theirs, "name = \"t\"\n[match]\nimages=[\"t\"]\n").unwrap();
        std::os::unix::fs::chown(&theirs, Some(1000), None).unwrap();
        std::fs::write(&broken, "name = \"b\"\n[match\n").unwrap();
        let errs = PolicySet::load_dir(dir.path(), &Trust::new(None)).unwrap_err();
        assert_eq!(errs.0.len(), 3, "{errs}");
        let untrusted: Vec<&Path> = errs
            .0
            .iter()
            .filter(|e| matches!(e, PolicyError::Untrusted { .. }))
            .map(PolicyError::path)
            .collect();
        assert_eq!(untrusted, [bad.as_path(), theirs.as_path()], "{errs}");
        let text = errs.to_string();
        assert!(
            text.contains(&format!(
                "{}: file is group- and world-writable (mode 0666); fix: chmod go-w {}",
                bad.display(),
                bad.display()
            )),
            "{text}"
        );
        assert!(text.contains("owned by uid 1000, not root"), "{text}");
        // The admin uid may own policies.
        std::fs::remove_file(&bad).unwrap();
        std::fs::remove_file(&broken).unwrap();
        assert!(PolicySet::load_dir(dir.path(), &Trust::new(Some(1000))).is_ok());
    }

    #[test]
    fn untrusted_directory() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.toml"), WEB).unwrap();
        chmod(dir.path(), 0o777);
        let errs = PolicySet::load_dir(dir.path(), &Trust::new(None)).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].path(), dir.path());
        assert!(
            errs.to_string()
                .contains("directory is group- and world-writable (mode 0777)"),
            "{errs}"
        );
        // A policy directory that does not exist, below one that does but is untrusted.
        let errs = PolicySet::load_dir(&dir.path().join("missing"), &Trust::new(None)).unwrap_err();
        assert!(matches!(errs.0[0], PolicyError::Untrusted { .. }), "{errs}");
        // A symlink to it.
        chmod(dir.path(), 0o755);
        let other = tempfile::tempdir().unwrap();
        let link = other.path().join("policies");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert_eq!(
            PolicySet::load_dir(&link, &Trust::new(None))
                .unwrap()
                .policies[0]
                .source
                .as_deref(),
            Some(link.join("web.toml").as_path())
        );
        std::os::unix::fs::chown(dir.path(), Some(1000), None).unwrap();
        let errs = PolicySet::load_dir(&link, &Trust::new(None)).unwrap_err();
        assert!(
            errs.to_string()
                .starts_with(&format!("{} -> ", link.display())),
            "{errs}"
        );
    }

    /// A policy directory that is a symlink is resolved once per load: when it is swapped to
    /// another set while a load is under way (how deploy/kubernetes/sync-policies.sh
    /// publishes), files are still read from the set that was listed, never a mix of both.
    #[test]
    fn files_are_read_from_the_directory_that_was_resolved() {
        let base = tempfile::tempdir().unwrap();
        let (old, new) = (base.path().join("g1"), base.path().join("g2"));
        for (dir, name) in [(&old, "old"), (&new, "new")] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("web.toml"), format!("name = \"{name}\"\n")).unwrap();
        }
        let link = base.path().join("policies");
        std::os::unix::fs::symlink("g1", &link).unwrap();
        let trust = Trust::new(None);
        let resolved = trust.check_path(&link, Kind::Dir).unwrap();
        // The swap, between listing and reading.
        let tmp = base.path().join(".policies.tmp");
        std::os::unix::fs::symlink("g2", &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        let text = read_trusted(&resolved, &link.join("web.toml"), false, &trust).unwrap();
        assert_eq!(text, "name = \"old\"\n");
    }

    /// Kubernetes mounts a ConfigMap as `x.toml -> ..data/x.toml`, `..data -> ..<timestamp>`.
    #[test]
    fn configmap_volume_layout_loads() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ts = dir.path().join("..2024_05_01_12_00_00.123");
        std::fs::create_dir(&ts).unwrap();
        chmod(&ts, 0o755);
        std::fs::write(ts.join("web.toml"), WEB).unwrap();
        std::os::unix::fs::symlink("..2024_05_01_12_00_00.123", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/web.toml", dir.path().join("web.toml")).unwrap();
        let set = PolicySet::load_dir(dir.path(), &Trust::new(None)).unwrap();
        assert_eq!(set.policies.len(), 1);
        assert_eq!(
            set.policies[0].source.as_deref(),
            Some(dir.path().join("web.toml").as_path())
        );
        // A writable file at the end of the chain is named by the link and where it leads.
        chmod(&ts.join("web.toml"), 0o646);
        let errs = PolicySet::load_dir(dir.path(), &Trust::new(None)).unwrap_err();
        let text = errs.to_string();
        assert!(
            text.starts_with(&format!("{} -> ", dir.path().join("web.toml").display()))
                && text.contains("file is world-writable (mode 0646)"),
            "{text}"
        );
        // A link out of the directory to a file someone else owns.
        chmod(&ts.join("web.toml"), 0o644);
        let elsewhere = tempfile::tempdir().unwrap();
        let foreign = elsewhere.path().join("f.toml");
        std::fs::write(&foreign, "name = \"f\"\n[match]\nimages=[\"f\"]\n").unwrap();
        std::os::unix::fs::chown(&foreign, Some(1000), None).unwrap();
        std::os::unix::fs::symlink(&foreign, dir.path().join("f.toml")).unwrap();
        let errs = PolicySet::load_dir(dir.path(), &Trust::new(None)).unwrap_err();
        assert_eq!(errs.0.len(), 1, "{errs}");
        assert!(errs.to_string().contains("owned by uid 1000"), "{errs}");
    }

    #[test]
    fn a_directory_named_like_a_policy_is_not_read() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d.toml")).unwrap();
        let errs = PolicySet::load_dir(dir.path(), &Trust::new(None)).unwrap_err();
        assert!(
            errs.to_string()
                .ends_with("is a directory, not a regular file"),
            "{errs}"
        );
    }
}

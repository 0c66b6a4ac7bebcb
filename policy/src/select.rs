//! Choosing a policy for a container: facts about the container → the most specific match.
//!
//! Facts come from untrusted places (engine annotations, later image labels); they can only
//! *select* among admin-written policies. Specificity is, in order: the policy's `priority`, the
//! number of conditions in its `[match]`, then how many of those are exact (glob-free). Two
//! matching policies that are equal on all three are ambiguous and the create fails closed.

use std::collections::BTreeMap;

use glob_match::glob_match;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::annotations::OWN_PREFIX;
use crate::model::{ContainerType, Selector};
use crate::set::{LoadedPolicy, PolicySet};

/// Annotations that carry the image reference, by engine, in order of preference.
pub const IMAGE_ANNOTATIONS: &[&str] = &[
    "io.kubernetes.cri.image-name",      // containerd CRI
    "io.kubernetes.cri-o.ImageName",     // CRI-O
    "org.opencontainers.image.ref.name", // image-spec; set by some tools
];
/// The digest an image reference pins (`name@sha256:...`), if it pins one.
pub fn pinned_digest(reference: &str) -> Option<&str> {
    reference.split_once('@').map(|(_, d)| d)
}

/// Annotations that carry the Kubernetes namespace.
pub const NAMESPACE_ANNOTATIONS: &[&str] = &[
    "io.kubernetes.cri.sandbox-namespace", // containerd CRI
    "io.kubernetes.pod.namespace",         // CRI-O, dockershim
];
/// Annotations that carry the pod name.
pub const POD_ANNOTATIONS: &[&str] = &["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"];
/// Annotations that say whether this is the pod sandbox, and the value that means "sandbox".
pub const CONTAINER_TYPE_ANNOTATIONS: &[(&str, &str)] = &[
    ("io.kubernetes.cri.container-type", "sandbox"), // containerd CRI
    ("io.kubernetes.cri-o.ContainerType", "sandbox"), // CRI-O
    ("io.kubernetes.docker.type", "podsandbox"),     // dockershim
];
/// CRI-O's record of the container's (or, for the sandbox, the pod's) Kubernetes labels, as a
/// JSON object in one annotation.
pub const CRIO_LABELS: &str = "io.kubernetes.cri-o.Labels";
/// CRI-O's record of the container's (or the pod's) Kubernetes annotations, likewise.
pub const CRIO_ANNOTATIONS: &str = "io.kubernetes.cri-o.Annotations";
/// Largest such annotation read: Kubernetes' own limit on all of an object's annotations.
pub const MAX_KUBERNETES_METADATA: usize = 256 * 1024;
/// Most entries read from one such annotation.
pub const MAX_KUBERNETES_ENTRIES: usize = 1024;
/// Kubernetes labels (set by the kubelet) that carry the namespace and the pod name.
pub const KUBE_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
const KUBE_POD_LABEL: &str = "io.kubernetes.pod.name";

/// Label or annotation keys whose values are never written to logs or printed.
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "apikey",
    "api-key",
    "api_key",
    "private",
    "key",
];

/// Does `key` look like it holds a secret (case-insensitive substring match)?
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|p| k.contains(p))
}

/// An untrusted map as the decision log, `explain` and errors show it: secret-looking values
/// redacted, and bounded ([`crate::excerpt::bounded_entries`]): a pod's 50 MB annotation is a
/// few KiB in the log.
fn redacted<S: Serializer>(map: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    let entries = map.iter().map(|(k, v)| {
        if is_secret_key(k) {
            (k.as_str(), "<redacted>")
        } else {
            (k.as_str(), v.as_str())
        }
    });
    s.collect_map(crate::excerpt::bounded_entries(
        entries,
        crate::excerpt::MAX_VALUE,
    ))
}

/// An untrusted string (an image name from an annotation, a reason quoting one), bounded.
fn bounded_opt<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&crate::excerpt::bounded(v)),
        None => s.serialize_none(),
    }
}

fn bounded_list<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| crate::excerpt::bounded(x)))
}

/// Most aliases of one image kept in [`Facts::image_aliases`] (a store may tag an image many
/// times; each alias is one more glob test per policy).
pub const MAX_IMAGE_ALIASES: usize = 16;

/// What is known about a container when choosing its policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    #[serde(serialize_with = "bounded_opt")]
    pub image: Option<String>,
    /// Where `image` came from (an annotation key, or the engine's image store).
    #[serde(serialize_with = "bounded_opt")]
    pub image_source: Option<String>,
    #[serde(serialize_with = "bounded_opt")]
    pub image_digest: Option<String>,
    /// Other names the engine's image store gives the same image (its tags when the container
    /// was created by digest, `name@sha256:...`): `[match] images` matches any of them, so a
    /// tag glob selects an image however it was started. At most [`MAX_IMAGE_ALIASES`].
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "bounded_list")]
    pub image_aliases: Vec<String>,
    /// Image labels (from the engine's image store; untrusted: written by the image's author).
    #[serde(serialize_with = "redacted")]
    pub labels: BTreeMap<String, String>,
    /// Where the labels came from.
    #[serde(serialize_with = "bounded_opt")]
    pub labels_source: Option<String>,
    /// Why labels could not be resolved, if they could not.
    #[serde(serialize_with = "bounded_opt")]
    pub labels_unresolved: Option<String>,
    /// The bundle's annotations, minus ociguard's own (`org.ociguard.*`).
    #[serde(serialize_with = "redacted")]
    pub annotations: BTreeMap<String, String>,
    /// Kubernetes labels of the container (of the pod, for its sandbox), from CRI-O's
    /// `io.kubernetes.cri-o.Labels`. Written by the pod's author and the kubelet, not by the
    /// image's: never mixed into `labels`, which `[match] labels` and `selectable_by_label` are
    /// about; `[match] kubernetes_labels` selects on these. CRI-O copies the pod's annotations into the bundle after its own, so a pod can
    /// overwrite this record: it is recorded, and only fills in the namespace and pod name when
    /// no annotation gave them.
    #[serde(serialize_with = "redacted")]
    pub kubernetes_labels: BTreeMap<String, String>,
    /// Kubernetes annotations of the container or pod, from CRI-O's
    /// `io.kubernetes.cri-o.Annotations` (CRI-O also copies each into the bundle's annotations).
    #[serde(serialize_with = "redacted")]
    pub kubernetes_annotations: BTreeMap<String, String>,
    /// Which annotations `kubernetes_labels` and `kubernetes_annotations` were read from.
    #[serde(serialize_with = "bounded_opt")]
    pub kubernetes_metadata_source: Option<String>,
    /// Why one of them could not be read (too large, not a JSON object of strings, ...); the
    /// map stays empty then.
    #[serde(serialize_with = "bounded_opt")]
    pub kubernetes_metadata_unresolved: Option<String>,
    #[serde(serialize_with = "bounded_opt")]
    pub kubernetes_namespace: Option<String>,
    #[serde(serialize_with = "bounded_opt")]
    pub kubernetes_pod: Option<String>,
    #[serde(serialize_with = "bounded_opt")]
    pub service_account: Option<String>,
    pub container_type: ContainerType,
}

/// Why a CRI-O JSON-object annotation is refused, or its entries. Untrusted input: bounded size
/// and count, string values only, no control characters (except tab and newlines in values),
/// and an error message of bounded length whatever the input.
fn kubernetes_map(value: &str) -> Result<BTreeMap<String, String>, String> {
    if value.len() > MAX_KUBERNETES_METADATA {
        return Err(format!(
            "{} bytes (limit {MAX_KUBERNETES_METADATA})",
            value.len()
        ));
    }
    let map: BTreeMap<String, String> = serde_json::from_str(value).map_err(|e| {
        format!(
            "not a JSON object of strings: {}",
            crate::excerpt::excerpt(&e.to_string(), 200)
        )
    })?;
    if map.len() > MAX_KUBERNETES_ENTRIES {
        return Err(format!(
            "{} entries (limit {MAX_KUBERNETES_ENTRIES})",
            map.len()
        ));
    }
    let bad = |s: &str, value: bool| {
        s.chars()
            .any(|c| c.is_control() && !(value && matches!(c, '\t' | '\n' | '\r')))
    };
    if let Some((k, _)) = map
        .iter()
        .find(|(k, v)| k.is_empty() || bad(k, false) || bad(v, true))
    {
        let shown: String = k.chars().take(64).collect();
        return Err(format!(
            "entry {shown:?} has an empty key or a control character"
        ));
    }
    Ok(map)
}

fn first_annotation(ann: &BTreeMap<String, String>, keys: &[&str]) -> Option<(String, String)> {
    keys.iter().find_map(|k| {
        ann.get(*k)
            .filter(|v| !v.is_empty())
            .map(|v| ((*k).to_owned(), v.clone()))
    })
}

impl Facts {
    /// Facts from a `config.json` document (annotations only; labels are resolved elsewhere).
    pub fn from_spec(spec: &Value) -> Facts {
        let mut facts = Facts::default();
        if let Some(map) = spec.get("annotations").and_then(Value::as_object) {
            for (k, v) in map {
                if let (false, Some(v)) = (k.starts_with(OWN_PREFIX), v.as_str()) {
                    facts.annotations.insert(k.clone(), v.to_owned());
                }
            }
        }
        if let Some((key, image)) = first_annotation(&facts.annotations, IMAGE_ANNOTATIONS) {
            facts.image = Some(image);
            facts.image_source = Some(format!("annotation {key}"));
        }
        facts.kubernetes_namespace =
            first_annotation(&facts.annotations, NAMESPACE_ANNOTATIONS).map(|(_, v)| v);
        facts.kubernetes_pod =
            first_annotation(&facts.annotations, POD_ANNOTATIONS).map(|(_, v)| v);
        facts.read_crio_metadata();
        if CONTAINER_TYPE_ANNOTATIONS
            .iter()
            .any(|(k, sandbox)| facts.annotations.get(*k).map(String::as_str) == Some(*sandbox))
        {
            facts.container_type = ContainerType::Sandbox;
        }
        facts
    }
}

impl Facts {
    /// Fill `kubernetes_labels`/`kubernetes_annotations` from CRI-O's JSON annotations, and the
    /// namespace and pod name from the kubelet's labels when no annotation gave them.
    fn read_crio_metadata(&mut self) {
        let mut sources = Vec::new();
        let mut unresolved = Vec::new();
        for key in [CRIO_LABELS, CRIO_ANNOTATIONS] {
            let Some(value) = self.annotations.get(key) else {
                continue;
            };
            match kubernetes_map(value) {
                Ok(map) => {
                    sources.push(format!("annotation {key}"));
                    if key == CRIO_LABELS {
                        self.kubernetes_labels = map;
                    } else {
                        self.kubernetes_annotations = map;
                    }
                }
                Err(why) => unresolved.push(format!("annotation {key}: {why}")),
            }
        }
        if !sources.is_empty() {
            self.kubernetes_metadata_source = Some(sources.join(", "));
        }
        if !unresolved.is_empty() {
            self.kubernetes_metadata_unresolved = Some(unresolved.join("; "));
        }
        let label = |k: &str| {
            self.kubernetes_labels
                .get(k)
                .filter(|v| !v.is_empty())
                .cloned()
        };
        if self.kubernetes_namespace.is_none() {
            self.kubernetes_namespace = label(KUBE_NAMESPACE_LABEL);
        }
        if self.kubernetes_pod.is_none() {
            self.kubernetes_pod = label(KUBE_POD_LABEL);
        }
    }
}

impl Facts {
    /// Why `kubernetes_labels` says nothing about this container, if it does not: no engine
    /// recorded them (only CRI-O does), or CRI-O's record was refused. A record that parsed is
    /// an answer even when empty.
    fn kubernetes_labels_unavailable(&self) -> Option<String> {
        // `read_crio_metadata` reads the labels annotation first, so its failure, if any, leads
        // the list; `starts_with` (not `contains`) so that an offending key quoted in a later
        // reason cannot pose as it.
        let prefix = format!("annotation {CRIO_LABELS}: ");
        if let Some(why) = self
            .kubernetes_metadata_unresolved
            .as_deref()
            .filter(|u| u.starts_with(&prefix))
        {
            return Some(format!("unresolved: {why}"));
        }
        if self.kubernetes_labels.is_empty() && !self.annotations.contains_key(CRIO_LABELS) {
            return Some(format!(
                "unknown: no {CRIO_LABELS} annotation (only CRI-O passes pod labels to the runtime)"
            ));
        }
        None
    }
}

impl Facts {
    /// Why the image (or its digest) is not known: the engine store's answer when it was asked
    /// (socket absent, namespace, no such container...), else that nothing names it.
    pub fn image_unresolved(&self) -> &str {
        match (&self.labels_unresolved, &self.image) {
            (Some(why), _) => why,
            (None, Some(_)) => "the image store gave no digest for it",
            (None, None) => "no image annotation, and the engine's image store was not asked",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Specificity {
    pub priority: i32,
    pub conditions: u32,
    pub exact: u32,
}

/// One policy's evaluation, as `ociguardctl explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Considered {
    pub policy: String,
    pub source: String,
    pub matched: bool,
    pub specificity: Specificity,
    /// One line per condition: what was compared and the outcome.
    pub why: Vec<String>,
}

/// The chosen policy and why.
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    pub policy: &'a LoadedPolicy,
    pub reason: String,
    pub considered: Vec<Considered>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("policies {a:?} ({a_source}) and {b:?} ({b_source}) both match with equal specificity; raise one's priority or narrow its [match]")]
    Ambiguous {
        a: String,
        a_source: String,
        b: String,
        b_source: String,
    },
}

fn is_exact(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '[', '{', '\\'])
}

/// Evaluates conditions one by one, accumulating the verdict and the explanation.
struct Eval<'a> {
    matched: bool,
    spec: Specificity,
    why: Vec<String>,
    facts: &'a Facts,
}

impl Eval<'_> {
    /// A list condition: `value` must match one of `globs`.
    fn any_glob(&mut self, what: &str, globs: &[toml::Spanned<String>], value: Option<&str>) {
        self.any_glob_among(what, globs, value.ok_or(""), &[]);
    }

    /// A list condition on a value known by several names (`value`, then `aliases`): one of
    /// them must match one of `globs`. `Err(why)` is an unknown value, and why it is unknown.
    fn any_glob_among(
        &mut self,
        what: &str,
        globs: &[toml::Spanned<String>],
        value: Result<&str, &str>,
        aliases: &[String],
    ) {
        if globs.is_empty() {
            return;
        }
        self.spec.conditions += 1;
        let value = match value {
            Ok(v) => v,
            Err(why) => {
                self.matched = false;
                self.why.push(if why.is_empty() {
                    format!("{what} unknown")
                } else {
                    format!("{what} unknown: {why}")
                });
                return;
            }
        };
        let found = std::iter::once(value)
            .chain(aliases.iter().map(String::as_str))
            .find_map(|v| {
                globs
                    .iter()
                    .find(|g| glob_match(g.get_ref(), v))
                    .map(|g| (v, g))
            });
        match found {
            Some((v, g)) => {
                if is_exact(g.get_ref()) {
                    self.spec.exact += 1;
                }
                if v == value {
                    self.why
                        .push(format!("{what} {value:?} matches {:?}", g.get_ref()));
                } else {
                    self.why.push(format!(
                        "{what} {value:?} (also named {v:?}) matches {:?}",
                        g.get_ref()
                    ));
                }
            }
            None => {
                self.matched = false;
                let list: Vec<&str> = globs.iter().map(|g| g.get_ref().as_str()).collect();
                if aliases.is_empty() {
                    self.why
                        .push(format!("{what} {value:?} matches none of {list:?}"));
                } else {
                    self.why.push(format!(
                        "{what} {value:?} (also named {aliases:?}) matches none of {list:?}"
                    ));
                }
            }
        }
    }

    /// A map condition: each key must be present with a value matching its glob.
    fn map_globs(
        &mut self,
        what: &str,
        conditions: &std::collections::BTreeMap<String, toml::Spanned<String>>,
        values: &BTreeMap<String, String>,
    ) {
        for (key, glob) in conditions {
            self.spec.conditions += 1;
            let shown = |v: &str| {
                if is_secret_key(key) {
                    "<redacted>".to_owned()
                } else {
                    format!("{v:?}")
                }
            };
            match values.get(key) {
                Some(v) if glob_match(glob.get_ref(), v) => {
                    if is_exact(glob.get_ref()) {
                        self.spec.exact += 1;
                    }
                    self.why.push(format!(
                        "{what} {key}={} matches {:?}",
                        shown(v),
                        glob.get_ref()
                    ));
                }
                Some(v) => {
                    self.matched = false;
                    self.why.push(format!(
                        "{what} {key}={} does not match {:?}",
                        shown(v),
                        glob.get_ref()
                    ));
                }
                None => {
                    self.matched = false;
                    self.why.push(format!("{what} {key} absent"));
                }
            }
        }
    }
}

fn evaluate_one(policy: &LoadedPolicy, facts: &Facts) -> Considered {
    let sel: &Selector = &policy.policy.selector;
    let mut e = Eval {
        matched: true,
        spec: Specificity {
            priority: policy.policy.priority,
            conditions: 0,
            exact: 0,
        },
        why: Vec::new(),
        facts,
    };
    let image = e
        .facts
        .image
        .as_deref()
        .ok_or_else(|| facts.image_unresolved());
    e.any_glob_among("image", &sel.images, image, &facts.image_aliases);
    if !sel.digests.is_empty() {
        e.spec.conditions += 1;
        match e.facts.image_digest.as_deref() {
            Some(d) if sel.digests.iter().any(|x| x.get_ref() == d) => {
                e.spec.exact += 1;
                e.why.push(format!("image digest {d} listed"));
            }
            Some(d) => {
                e.matched = false;
                e.why.push(format!("image digest {d} not listed"));
            }
            None => {
                e.matched = false;
                e.why.push(format!(
                    "image digest unknown: {}",
                    facts.image_unresolved()
                ));
            }
        }
    }
    if !sel.labels.is_empty() && e.facts.labels_unresolved.is_some() {
        e.matched = false;
        e.spec.conditions += u32::try_from(sel.labels.len()).unwrap_or(u32::MAX);
        e.why.push(format!(
            "image labels unresolved: {}",
            e.facts.labels_unresolved.as_deref().unwrap_or_default()
        ));
    } else {
        e.map_globs("label", &sel.labels, &facts.labels);
    }
    e.map_globs("annotation", &sel.annotations, &facts.annotations);
    if !sel.kubernetes_labels.is_empty() {
        match facts.kubernetes_labels_unavailable() {
            // Say why, rather than "absent" for every key: the container may well carry them.
            Some(why) => {
                e.matched = false;
                e.spec.conditions += u32::try_from(sel.kubernetes_labels.len()).unwrap_or(u32::MAX);
                e.why.push(format!("kubernetes labels {why}"));
            }
            None => e.map_globs(
                "kubernetes label",
                &sel.kubernetes_labels,
                &facts.kubernetes_labels,
            ),
        }
    }
    e.any_glob(
        "kubernetes namespace",
        &sel.kubernetes_namespaces,
        e.facts.kubernetes_namespace.as_deref(),
    );
    e.any_glob(
        "service account",
        &sel.service_accounts,
        e.facts.service_account.as_deref(),
    );
    // A pod sandbox gets its own policy: a [match] without container_type means application
    // containers only (not counted as a condition, so it adds no specificity).
    let wanted = sel.container_type.unwrap_or(ContainerType::Container);
    if sel.container_type.is_some() {
        e.spec.conditions += 1;
        e.spec.exact += 1;
    }
    if wanted != facts.container_type {
        e.matched = false;
        e.why.push(format!(
            "container type {:?} is not {:?}",
            facts.container_type, wanted
        ));
    } else if sel.container_type.is_some() {
        e.why.push(format!("container type {wanted:?}"));
    }
    Considered {
        policy: policy.name().to_owned(),
        source: policy.source_display(),
        matched: e.matched,
        specificity: e.spec,
        why: e.why,
    }
}

/// Evaluate every policy and choose one.
pub fn select<'a>(set: &'a PolicySet, facts: &Facts) -> Result<Selection<'a>, SelectError> {
    let considered: Vec<Considered> = set
        .policies
        .iter()
        .map(|p| evaluate_one(p, facts))
        .collect();
    let mut best: Option<usize> = None;
    for (i, c) in considered.iter().enumerate().filter(|(_, c)| c.matched) {
        match best {
            Some(b) if considered[b].specificity > c.specificity => {}
            _ => best = Some(i),
        }
    }
    let Some(best) = best else {
        return Ok(Selection {
            policy: &set.default,
            reason: "no policy's [match] selected this container; default applies".to_owned(),
            considered,
        });
    };
    if let Some(tie) = considered
        .iter()
        .enumerate()
        .find(|(i, c)| *i != best && c.matched && c.specificity == considered[best].specificity)
    {
        return Err(SelectError::Ambiguous {
            a: considered[best].policy.clone(),
            a_source: considered[best].source.clone(),
            b: tie.1.policy.clone(),
            b_source: tie.1.source.clone(),
        });
    }
    let reason = considered[best].why.join("; ");
    Ok(Selection {
        policy: &set.policies[best],
        reason,
        considered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn set(files: &[(&str, &str)]) -> PolicySet {
        PolicySet::from_texts(files.iter().map(|(p, t)| (Path::new(*p), *t))).unwrap()
    }

    fn facts(image: Option<&str>, ann: &[(&str, &str)]) -> Facts {
        Facts {
            image: image.map(str::to_owned),
            image_source: None,
            annotations: ann
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn facts_from_spec() {
        let spec = serde_json::json!({"annotations": {
            "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25",
            "org.ociguard.policy": "forged",
            "n": 3
        }});
        let f = Facts::from_spec(&spec);
        assert_eq!(f.image.as_deref(), Some("docker.io/library/nginx:1.25"));
        assert!(!f.annotations.contains_key("org.ociguard.policy"));
        assert!(!f.annotations.contains_key("n"));
        assert_eq!(Facts::from_spec(&serde_json::json!({})), Facts::default());
    }

    fn crio(labels: &str, annotations: &str) -> Facts {
        Facts::from_spec(&serde_json::json!({"annotations": {
            CRIO_LABELS: labels, CRIO_ANNOTATIONS: annotations,
            "io.kubernetes.cri-o.ImageName": "quay.io/app:1"}}))
    }

    #[test]
    fn crio_kubernetes_metadata_is_recorded_apart_from_image_labels() {
        let f = crio(
            r#"{"io.kubernetes.pod.namespace":"payments","io.kubernetes.pod.name":"api-0","team":"billing"}"#,
            r#"{"kubernetes.io/config.source":"api","db.password":"hunter2"}"#,
        );
        assert_eq!(
            f.kubernetes_labels.get("team").map(String::as_str),
            Some("billing")
        );
        assert_eq!(
            f.kubernetes_annotations
                .get("kubernetes.io/config.source")
                .map(String::as_str),
            Some("api")
        );
        // Pod labels are not image labels: `[match] labels` never sees them.
        assert!(f.labels.is_empty() && f.labels_source.is_none());
        assert_eq!(f.kubernetes_namespace.as_deref(), Some("payments"));
        assert_eq!(f.kubernetes_pod.as_deref(), Some("api-0"));
        assert_eq!(f.image.as_deref(), Some("quay.io/app:1"));
        assert_eq!(
            f.kubernetes_metadata_source.as_deref(),
            Some(
                "annotation io.kubernetes.cri-o.Labels, annotation io.kubernetes.cri-o.Annotations"
            )
        );
        assert_eq!(f.kubernetes_metadata_unresolved, None);
        let text = serde_json::to_string(&f).unwrap();
        assert!(!text.contains("hunter2\""), "{text}");

        // A label policy does not match on a pod label of the same name.
        let s = set(&[(
            "/p/t.toml",
            "name = \"t\"\n[match]\nlabels = { \"team\" = \"billing\" }\n",
        )]);
        assert_eq!(select(&s, &f).unwrap().policy.name(), "default");

        // The individual annotations (CRI-O sets them too) win over the JSON record.
        let f = Facts::from_spec(&serde_json::json!({"annotations": {
            CRIO_LABELS: r#"{"io.kubernetes.pod.namespace":"forged"}"#,
            "io.kubernetes.pod.namespace": "real"}}));
        assert_eq!(f.kubernetes_namespace.as_deref(), Some("real"));
    }

    #[test]
    fn malformed_crio_metadata_is_unresolved_with_a_bounded_reason() {
        let huge = format!("{{\"k\":\"{}\"}}", "v".repeat(MAX_KUBERNETES_METADATA));
        let many = format!(
            "{{{}}}",
            (0..=MAX_KUBERNETES_ENTRIES)
                .map(|i| format!("\"k{i}\":\"v\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        let long_string = serde_json::to_string(&"x".repeat(100_000)).unwrap();
        for (bad, expect) in [
            ("{broken", "not a JSON object"),
            ("[1,2]", "not a JSON object"),
            (r#"{"n":3}"#, "not a JSON object"),
            (r#"{"n":null}"#, "not a JSON object"),
            (r#"{"a":{"b":"c"}}"#, "not a JSON object"),
            (r#"{"bad\u0000key":"v"}"#, "control character"),
            (r#"{"k":"esc\u001b[31m"}"#, "control character"),
            (r#"{"k":"\ud800"}"#, "not a JSON object"),
            (r#"{"":"v"}"#, "empty key"),
            (huge.as_str(), "limit 262144"),
            (many.as_str(), "entries (limit 1024)"),
            (long_string.as_str(), "not a JSON object"),
        ] {
            let f = crio(bad, "{}");
            let why = f.kubernetes_metadata_unresolved.clone().unwrap_or_default();
            assert!(
                why.contains(CRIO_LABELS) && why.contains(expect),
                "{bad:.60}: {why}"
            );
            assert!(why.len() < 400, "unbounded reason: {} bytes", why.len());
            assert!(f.kubernetes_labels.is_empty());
            // The other annotation is still read.
            assert_eq!(
                f.kubernetes_metadata_source.as_deref(),
                Some("annotation io.kubernetes.cri-o.Annotations")
            );
        }
        // Newlines and tabs in values are fine (descriptions).
        let f = crio(r#"{"k":"a\nb\tc"}"#, "{}");
        assert_eq!(f.kubernetes_metadata_unresolved, None);
        // No CRI-O annotations: nothing recorded.
        let f = Facts::from_spec(&serde_json::json!({"annotations": {}}));
        assert_eq!(f.kubernetes_metadata_source, None);
        assert_eq!(f.kubernetes_metadata_unresolved, None);
    }

    #[test]
    fn most_specific_wins_and_default_applies_otherwise() {
        let s = set(&[
            ("/p/any-nginx.toml", "name = \"any-nginx\"\n[match]\nimages = [\"docker.io/library/nginx:*\"]\n"),
            ("/p/nginx-prod.toml", "name = \"nginx-prod\"\n[match]\nimages = [\"docker.io/library/nginx:*\"]\nannotations = { \"io.kubernetes.pod.namespace\" = \"prod\" }\n"),
        ]);
        let f = facts(
            Some("docker.io/library/nginx:1.25"),
            &[("io.kubernetes.pod.namespace", "prod")],
        );
        let sel = select(&s, &f).unwrap();
        assert_eq!(sel.policy.name(), "nginx-prod");
        assert!(sel.reason.contains("matches"), "{}", sel.reason);

        let f = facts(Some("docker.io/library/nginx:1.25"), &[]);
        assert_eq!(select(&s, &f).unwrap().policy.name(), "any-nginx");

        let f = facts(Some("docker.io/library/redis:7"), &[]);
        let sel = select(&s, &f).unwrap();
        assert_eq!(sel.policy.name(), "default");
        assert!(sel.considered.iter().all(|c| !c.matched));
        // `*` does not cross a `/`: a deeper repository is a different image.
        let f = facts(Some("docker.io/library/nginx/evil:1"), &[]);
        assert_eq!(select(&s, &f).unwrap().policy.name(), "default");
    }

    #[test]
    fn exact_beats_glob_and_priority_beats_all() {
        let s = set(&[
            (
                "/p/a.toml",
                "name = \"a\"\n[match]\nimages = [\"reg/app:*\"]\n",
            ),
            (
                "/p/b.toml",
                "name = \"b\"\n[match]\nimages = [\"reg/app:1\"]\n",
            ),
        ]);
        assert_eq!(
            select(&s, &facts(Some("reg/app:1"), &[]))
                .unwrap()
                .policy
                .name(),
            "b"
        );
        let s = set(&[
            (
                "/p/a.toml",
                "name = \"a\"\npriority = 10\n[match]\nimages = [\"reg/app:*\"]\n",
            ),
            (
                "/p/b.toml",
                "name = \"b\"\n[match]\nimages = [\"reg/app:1\"]\nannotations = { x = \"y\" }\n",
            ),
        ]);
        assert_eq!(
            select(&s, &facts(Some("reg/app:1"), &[("x", "y")]))
                .unwrap()
                .policy
                .name(),
            "a"
        );
    }

    #[test]
    fn equal_specificity_is_ambiguous() {
        let s = set(&[
            ("/p/a.toml", "name = \"a\"\n[match]\nimages = [\"reg/*\"]\n"),
            ("/p/b.toml", "name = \"b\"\n[match]\nimages = [\"*/app\"]\n"),
        ]);
        let err = select(&s, &facts(Some("reg/app"), &[])).unwrap_err();
        assert!(err.to_string().contains("/p/a.toml") && err.to_string().contains("/p/b.toml"));
    }

    #[test]
    fn annotation_presence_and_absence() {
        let s = set(&[(
            "/p/a.toml",
            "name = \"a\"\n[match]\nannotations = { \"team\" = \"*\" }\n",
        )]);
        assert_eq!(
            select(&s, &facts(None, &[("team", "x")]))
                .unwrap()
                .policy
                .name(),
            "a"
        );
        let sel = select(&s, &facts(None, &[])).unwrap();
        assert_eq!(sel.policy.name(), "default");
        assert_eq!(
            sel.considered[0].why,
            vec!["annotation team absent".to_owned()]
        );
    }

    fn labelled(labels: &[(&str, &str)]) -> Facts {
        Facts {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            labels_source: Some("test".into()),
            ..Default::default()
        }
    }

    #[test]
    fn labels_select_and_unresolved_labels_never_match() {
        let s = set(&[(
            "/p/web.toml",
            "name = \"web\"\n[match]\nlabels = { \"org.ociguard.profile\" = \"web\" }\n",
        )]);
        assert_eq!(
            select(&s, &labelled(&[("org.ociguard.profile", "web")]))
                .unwrap()
                .policy
                .name(),
            "web"
        );
        assert_eq!(
            select(&s, &labelled(&[("org.ociguard.profile", "other")]))
                .unwrap()
                .policy
                .name(),
            "default"
        );
        let f = Facts {
            labels_unresolved: Some("containerd socket absent".into()),
            ..Default::default()
        };
        let sel = select(&s, &f).unwrap();
        assert_eq!(sel.policy.name(), "default");
        assert!(
            sel.considered[0].why[0].contains("unresolved"),
            "{:?}",
            sel.considered
        );
    }

    fn pod(labels: &str) -> Facts {
        crio(labels, "{}")
    }

    #[test]
    fn kubernetes_labels_select_by_glob_and_presence() {
        let s = set(&[
            (
                "/p/payments.toml",
                "name = \"payments\"\n[match]\nkubernetes_labels = { app = \"payments-*\" }\n",
            ),
            (
                "/p/tracked.toml",
                "name = \"tracked\"\n[match]\nkubernetes_labels = { \"example.com/cost-center\" = \"*\" }\n",
            ),
        ]);
        let sel = select(&s, &pod(r#"{"app":"payments-api"}"#)).unwrap();
        assert_eq!(sel.policy.name(), "payments");
        assert_eq!(
            sel.reason,
            "kubernetes label app=\"payments-api\" matches \"payments-*\""
        );
        let sel = select(&s, &pod(r#"{"app":"web","example.com/cost-center":""}"#)).unwrap();
        assert_eq!(sel.policy.name(), "tracked");
        let payments = &sel.considered[0];
        assert!(!payments.matched);
        assert_eq!(
            payments.why,
            vec!["kubernetes label app=\"web\" does not match \"payments-*\"".to_owned()]
        );

        let sel = select(&s, &pod(r#"{"tier":"db"}"#)).unwrap();
        assert_eq!(sel.policy.name(), "default");
        assert_eq!(
            sel.considered[0].why,
            vec!["kubernetes label app absent".to_owned()]
        );
        // Secret-looking keys are matched but never shown.
        let s = set(&[(
            "/p/k.toml",
            "name = \"k\"\n[match]\nkubernetes_labels = { \"api-key\" = \"x*\" }\n",
        )]);
        let sel = select(&s, &pod(r#"{"api-key":"xyzzy"}"#)).unwrap();
        assert_eq!(sel.policy.name(), "k");
        assert!(!sel.reason.contains("xyzzy"), "{}", sel.reason);
    }

    #[test]
    fn kubernetes_labels_never_match_without_crio_record() {
        let s = set(&[(
            "/p/payments.toml",
            "name = \"payments\"\n[match]\nkubernetes_labels = { app = \"*\" }\n",
        )]);
        // containerd: no pod labels reach the runtime. An image label and an annotation of the
        // same name are other facts and do not stand in for them.
        let mut f = Facts::from_spec(&serde_json::json!({"annotations": {
            "io.kubernetes.cri.image-name": "reg/payments:1", "app": "payments-api"}}));
        f.labels = BTreeMap::from([("app".to_owned(), "payments-api".to_owned())]);
        f.labels_source = Some("containerd".into());
        let sel = select(&s, &f).unwrap();
        assert_eq!(sel.policy.name(), "default");
        assert!(
            sel.considered[0].why[0]
                .starts_with("kubernetes labels unknown: no io.kubernetes.cri-o.Labels"),
            "{:?}",
            sel.considered[0].why
        );
        assert_eq!(sel.considered[0].specificity.conditions, 1);
        assert_eq!(
            select(&s, &Facts::default()).unwrap().policy.name(),
            "default"
        );

        // A refused record: unresolved, never matched, even though the annotation is present.
        let sel = select(&s, &crio("{broken", "{}")).unwrap();
        assert_eq!(sel.policy.name(), "default");
        assert!(
            sel.considered[0].why[0].starts_with("kubernetes labels unresolved: annotation io.kubernetes.cri-o.Labels: not a JSON object"),
            "{:?}",
            sel.considered[0].why
        );
        // Only the other annotation refused, quoting the labels annotation's name in its key:
        // the labels record still counts.
        let f = crio(
            r#"{"app":"x"}"#,
            r#"{"annotation io.kubernetes.cri-o.Labels: \u0001":"v"}"#,
        );
        assert!(f.kubernetes_metadata_unresolved.is_some());
        assert_eq!(select(&s, &f).unwrap().policy.name(), "payments");
        // A record that parsed but is empty is an answer: the label is absent.
        let sel = select(&s, &pod("{}")).unwrap();
        assert_eq!(
            sel.considered[0].why,
            vec!["kubernetes label app absent".to_owned()]
        );
    }

    #[test]
    fn kubernetes_labels_specificity_against_image_labels() {
        let pod_glob = (
            "/p/pod.toml",
            "name = \"pod\"\n[match]\nkubernetes_labels = { app = \"payments-*\" }\n",
        );
        let image = (
            "/p/image.toml",
            "name = \"image\"\n[match]\nlabels = { \"org.ociguard.profile\" = \"payments\" }\n",
        );
        let mut f = pod(r#"{"app":"payments-api"}"#);
        f.labels = BTreeMap::from([("org.ociguard.profile".to_owned(), "payments".to_owned())]);
        f.labels_source = Some("test".into());

        // One condition each; the image label is exact, the pod label a glob.
        let s = set(&[pod_glob, image]);
        let sel = select(&s, &f).unwrap();
        assert_eq!(sel.policy.name(), "image");
        assert!(sel.considered[0].matched);
        assert_eq!(
            sel.considered[0].specificity,
            Specificity {
                priority: 0,
                conditions: 1,
                exact: 0
            }
        );
        // Equal on all three: ambiguous, the create fails closed.
        let pod_exact = (
            "/p/pod.toml",
            "name = \"pod\"\n[match]\nkubernetes_labels = { app = \"payments-api\" }\n",
        );
        let err = select(&set(&[pod_exact, image]), &f).unwrap_err();
        assert!(matches!(err, SelectError::Ambiguous { .. }), "{err}");
        // More conditions win over exactness; priority over both.
        let pod_two = (
            "/p/pod.toml",
            "name = \"pod\"\n[match]\nkubernetes_labels = { app = \"payments-*\", tier = \"*\" }\n",
        );
        let mut f2 = f.clone();
        f2.kubernetes_labels.insert("tier".into(), "api".into());
        assert_eq!(
            select(&set(&[pod_two, image]), &f2).unwrap().policy.name(),
            "pod"
        );
        let pod_prio = (
            "/p/pod.toml",
            "name = \"pod\"\npriority = 1\n[match]\nkubernetes_labels = { app = \"payments-*\" }\n",
        );
        assert_eq!(
            select(&set(&[pod_prio, image]), &f).unwrap().policy.name(),
            "pod"
        );

        // Not an image label, so a policy closed to image labels may still use it.
        let closed = (
            "/p/closed.toml",
            "name = \"closed\"\nselectable_by_label = false\n[match]\nkubernetes_labels = { app = \"payments-api\" }\nkubernetes_namespaces = [\"payments\"]\n",
        );
        let mut f3 = pod(r#"{"app":"payments-api","io.kubernetes.pod.namespace":"payments"}"#);
        f3.labels = f.labels.clone();
        assert_eq!(
            select(&set(&[closed, image]), &f3).unwrap().policy.name(),
            "closed"
        );
    }

    #[test]
    fn sandbox_gets_its_own_policy() {
        let s = set(&[
            (
                "/p/ns.toml",
                "name = \"ns\"\n[match]\nkubernetes_namespaces = [\"payments\"]\n",
            ),
            (
                "/p/pause.toml",
                "name = \"pause\"\n[match]\ncontainer_type = \"sandbox\"\n",
            ),
        ]);
        let spec = serde_json::json!({"annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-namespace": "payments"}});
        let f = Facts::from_spec(&spec);
        assert_eq!(f.container_type, ContainerType::Sandbox);
        assert_eq!(select(&s, &f).unwrap().policy.name(), "pause");
        let spec = serde_json::json!({"annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-namespace": "payments"}});
        assert_eq!(
            select(&s, &Facts::from_spec(&spec)).unwrap().policy.name(),
            "ns"
        );
    }

    #[test]
    fn digests_and_service_accounts() {
        let d = format!("sha256:{}", "a".repeat(64));
        let s = set(&[(
            "/p/d.toml",
            &format!(
                "name = \"d\"\n[match]\ndigests = [\"{d}\"]\nservice_accounts = [\"billing-*\"]\n"
            ),
        )]);
        let mut f = Facts {
            image_digest: Some(d.clone()),
            service_account: Some("billing-api".into()),
            ..Default::default()
        };
        assert_eq!(select(&s, &f).unwrap().policy.name(), "d");
        f.service_account = None;
        assert_eq!(select(&s, &f).unwrap().policy.name(), "default");
    }

    #[test]
    fn a_tag_glob_matches_an_image_started_by_digest_through_its_aliases() {
        let d = format!("sha256:{}", "b".repeat(64));
        let s = set(&[
            (
                "/p/bb.toml",
                "name = \"bb\"\n[match]\nimages = [\"localhost/bb:*\"]\n",
            ),
            (
                "/p/pinned.toml",
                &format!("name = \"pinned\"\npriority = 1\n[match]\ndigests = [\"{d}\"]\n"),
            ),
        ]);
        let mut f = facts(Some(&format!("localhost/bb@{d}")), &[]);
        // By digest, no aliases known: the tag glob cannot match.
        let sel = select(&s, &f).unwrap();
        assert_eq!(sel.policy.name(), "default");
        // The store names its tags: the glob matches one, and says which.
        f.image_aliases = vec!["localhost/other:2".into(), "localhost/bb:1".into()];
        let sel = select(&s, &f).unwrap();
        assert_eq!(sel.policy.name(), "bb");
        let why = &sel
            .considered
            .iter()
            .find(|c| c.policy == "bb")
            .unwrap()
            .why;
        assert!(why[0].contains("also named \"localhost/bb:1\""), "{why:?}");
        // A digest is matched only by `digests`, never by an `images` glob.
        f.image_digest = Some(d);
        assert_eq!(select(&s, &f).unwrap().policy.name(), "pinned");
    }

    #[test]
    fn an_unknown_image_names_the_cause() {
        let s = set(&[(
            "/p/bb.toml",
            &format!("name = \"bb\"\n[match]\nimages = [\"localhost/bb:*\"]\ndigests = [\"sha256:{}\"]\n", "c".repeat(64)),
        )]);
        let mut f = facts(None, &[]);
        f.labels_unresolved = Some("containerd: socket /run/x.sock absent".into());
        let sel = select(&s, &f).unwrap();
        let why = &sel
            .considered
            .iter()
            .find(|c| c.policy == "bb")
            .unwrap()
            .why;
        assert_eq!(
            why,
            &[
                "image unknown: containerd: socket /run/x.sock absent",
                "image digest unknown: containerd: socket /run/x.sock absent"
            ]
        );
        f.labels_unresolved = None;
        let sel = select(&s, &f).unwrap();
        let why = &sel
            .considered
            .iter()
            .find(|c| c.policy == "bb")
            .unwrap()
            .why;
        assert!(
            why[0].starts_with("image unknown: no image annotation"),
            "{why:?}"
        );
    }

    #[test]
    fn secret_label_values_are_redacted() {
        let f = labelled(&[("db.password", "hunter2"), ("tier", "web")]);
        let text = serde_json::to_string(&f).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("<redacted>") && text.contains("\"web\""),
            "{text}"
        );
    }
}

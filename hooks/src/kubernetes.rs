//! Kubernetes facts about a container: namespace, pod, container name from the annotations
//! the CRI implementations write, and the service account from the token the kubelet mounted.
//!
//! containerd's CRI plugin writes `io.kubernetes.cri.sandbox-namespace` and friends; CRI-O
//! writes `io.kubernetes.pod.namespace` etc., and the same as JSON in `io.kubernetes.cri-o.Labels`.
//! Neither passes the service account, so it is read from the projected token that the kubelet
//! mounts at `/var/run/secrets/kubernetes.io/serviceaccount`: a host file the kubelet wrote,
//! whose JWT claims name the account. Only the claims are read (no signature check — the file's
//! provenance is the kubelet's directory, not the token), and only if they agree with the pod's
//! namespace.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use base64::Engine as _;
use ociguard_monitor::record::Kubernetes;
use serde_json::Value;

const TOKEN_MOUNTS: &[&str] = &[
    "/var/run/secrets/kubernetes.io/serviceaccount",
    "/run/secrets/kubernetes.io/serviceaccount",
];
const MAX_TOKEN: u64 = 64 * 1024;

/// `(plain CRI-O / kubelet label key, containerd CRI key)` per field.
const NAMESPACE: (&str, &str) = (
    "io.kubernetes.pod.namespace",
    "io.kubernetes.cri.sandbox-namespace",
);
const POD: (&str, &str) = ("io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name");
const POD_UID: (&str, &str) = ("io.kubernetes.pod.uid", "io.kubernetes.cri.sandbox-uid");
const CONTAINER: (&str, &str) = (
    "io.kubernetes.container.name",
    "io.kubernetes.cri.container-name",
);
const CRIO_LABELS: &str = "io.kubernetes.cri-o.Labels";

fn lookup(
    ann: &BTreeMap<String, String>,
    crio: &BTreeMap<String, String>,
    (plain, cri): (&str, &str),
) -> Option<String> {
    ann.get(plain)
        .or_else(|| ann.get(cri))
        .or_else(|| crio.get(plain))
        .filter(|v| !v.is_empty())
        .cloned()
}

/// The Kubernetes identity, if the annotations say this is a Kubernetes container.
pub fn from_spec(ann: &BTreeMap<String, String>, spec: Option<&Value>) -> Option<Kubernetes> {
    let crio: BTreeMap<String, String> = ann
        .get(CRIO_LABELS)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let mut k = Kubernetes {
        namespace: lookup(ann, &crio, NAMESPACE),
        pod: lookup(ann, &crio, POD),
        pod_uid: lookup(ann, &crio, POD_UID),
        container: lookup(ann, &crio, CONTAINER),
        service_account: None,
    };
    if k.is_empty() {
        return None;
    }
    if let Some(spec) = spec {
        k.service_account = service_account(spec, k.namespace.as_deref());
    }
    Some(k)
}

/// The service account named by the token mounted into the container, if any.
fn service_account(spec: &Value, namespace: Option<&str>) -> Option<String> {
    let mounts = spec.get("mounts")?.as_array()?;
    let source = mounts.iter().find_map(|m| {
        let dest = m.get("destination")?.as_str()?;
        TOKEN_MOUNTS
            .contains(&dest.trim_end_matches('/'))
            .then(|| m.get("source")?.as_str())
            .flatten()
    })?;
    let token = read_token(&Path::new(source).join("token"))?;
    let (ns, name) = claims_account(&token)?;
    match namespace {
        Some(pod_ns) if pod_ns != ns => None,
        _ => Some(name),
    }
}

fn read_token(path: &Path) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_TOKEN).read_to_string(&mut s).ok()?;
    Some(s)
}

/// `(namespace, name)` from a service-account JWT's claims.
pub fn claims_account(jwt: &str) -> Option<(String, String)> {
    let payload = jwt.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    if let Some(k) = claims.get("kubernetes.io") {
        let ns = k.get("namespace").and_then(Value::as_str);
        let name = k
            .get("serviceaccount")
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str);
        if let (Some(ns), Some(name)) = (ns, name) {
            return Some((ns.to_owned(), name.to_owned()));
        }
    }
    // Legacy tokens: sub = system:serviceaccount:<namespace>:<name>
    let sub = claims.get("sub")?.as_str()?;
    let rest = sub.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    Some((ns.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(claims: &Value) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(br#"{"alg":"RS256"}"#),
            e.encode(serde_json::to_vec(claims).unwrap())
        )
    }

    #[test]
    fn containerd_and_crio_annotations() {
        let ann: BTreeMap<String, String> = [
            ("io.kubernetes.cri.sandbox-namespace", "payments"),
            ("io.kubernetes.cri.sandbox-name", "api-7d9"),
            ("io.kubernetes.cri.container-name", "api"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let k = from_spec(&ann, None).unwrap();
        assert_eq!(k.namespace.as_deref(), Some("payments"));
        assert_eq!(k.pod.as_deref(), Some("api-7d9"));
        assert_eq!(k.container.as_deref(), Some("api"));

        let mut crio = BTreeMap::new();
        crio.insert(
            CRIO_LABELS.to_owned(),
            r#"{"io.kubernetes.pod.namespace":"ns1","io.kubernetes.pod.name":"p1","io.kubernetes.container.name":"c1"}"#
                .to_owned(),
        );
        let k = from_spec(&crio, None).unwrap();
        assert_eq!(
            (k.namespace.as_deref(), k.pod.as_deref()),
            (Some("ns1"), Some("p1"))
        );
        assert!(from_spec(&BTreeMap::new(), None).is_none());
    }

    #[test]
    fn service_account_from_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("token"),
            jwt(&json!({"kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api-sa", "uid": "x"}}})),
        )
        .unwrap();
        let spec = json!({"mounts": [{"destination": "/var/run/secrets/kubernetes.io/serviceaccount",
                                      "source": dir.path(), "type": "bind"}]});
        let mut ann = BTreeMap::new();
        ann.insert(NAMESPACE.0.to_owned(), "payments".to_owned());
        let k = from_spec(&ann, Some(&spec)).unwrap();
        assert_eq!(k.service_account.as_deref(), Some("api-sa"));
        // a token of another namespace is not believed
        ann.insert(NAMESPACE.0.to_owned(), "other".to_owned());
        assert_eq!(from_spec(&ann, Some(&spec)).unwrap().service_account, None);
        assert_eq!(
            claims_account(&jwt(&json!({"sub": "system:serviceaccount:ns:legacy"}))),
            Some(("ns".into(), "legacy".into()))
        );
        assert_eq!(claims_account("not-a-jwt"), None);
    }
}

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

use ociguard_monitor::record::Kubernetes;
use ociguard_policy::kubernetes;
use serde_json::Value;
use std::collections::BTreeMap;

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

/// The Kubernetes identity, if the annotations say this is a Kubernetes container; the service
/// account from the token among `mounts` (config.json's).
pub fn from_spec(ann: &BTreeMap<String, String>, mounts: Option<&Value>) -> Option<Kubernetes> {
    let crio: BTreeMap<String, String> = ann
        .get(CRIO_LABELS)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let mut k = Kubernetes {
        namespace: lookup(ann, &crio, NAMESPACE).map(Into::into),
        pod: lookup(ann, &crio, POD),
        pod_uid: lookup(ann, &crio, POD_UID),
        container: lookup(ann, &crio, CONTAINER),
        service_account: None,
    };
    if k.is_empty() {
        return None;
    }
    if let Some(mounts) = mounts {
        k.service_account =
            kubernetes::service_account(mounts, k.namespace.as_deref()).map(Into::into);
    }
    Some(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
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
        let mounts = json!([{"destination": "/var/run/secrets/kubernetes.io/serviceaccount",
                             "source": dir.path(), "type": "bind"}]);
        let mut ann = BTreeMap::new();
        ann.insert(NAMESPACE.0.to_owned(), "payments".to_owned());
        let k = from_spec(&ann, Some(&mounts)).unwrap();
        assert_eq!(k.service_account.as_deref(), Some("api-sa"));
        // a token of another namespace is not believed
        ann.insert(NAMESPACE.0.to_owned(), "other".to_owned());
        assert_eq!(
            from_spec(&ann, Some(&mounts)).unwrap().service_account,
            None
        );
        assert_eq!(
            kubernetes::claims_account(&jwt(&json!({"sub": "system:serviceaccount:ns:legacy"}))),
            Some(("ns".into(), "legacy".into()))
        );
        assert_eq!(kubernetes::claims_account("not-a-jwt"), None);
    }
}

//! The Kubernetes service account of a container, from its projected token.
//!
//! CRI does not pass the service account to the runtime, but the kubelet mounts the account's
//! token at `/var/run/secrets/kubernetes.io/serviceaccount` from a host directory it owns. The
//! token is a JWT whose payload names the account (`kubernetes.io.serviceaccount.name`, or the
//! `sub` claim `system:serviceaccount:<ns>:<name>`). Only the payload is decoded (no signature
//! check: the file's provenance is the kubelet's directory, not the token), only if it agrees
//! with the pod's namespace, and the token is never logged or stored.
//!
//! Used by `create` (a policy may select on the service account) and by the identity hook (the
//! identity record carries it). This reads one host file, the token, bounded in size.

use std::io::Read;
use std::path::Path;

use base64::Engine as _;
use serde_json::Value;

/// Where the kubelet mounts the token directory in a container.
pub const TOKEN_MOUNTS: &[&str] = &[
    "/var/run/secrets/kubernetes.io/serviceaccount",
    "/run/secrets/kubernetes.io/serviceaccount",
];
/// Largest token read (real ones are about 1 KB).
pub const MAX_TOKEN: u64 = 64 * 1024;

/// The host directory mounted as the token directory, if any, from a config.json's `mounts`.
pub fn token_dir(mounts: &Value) -> Option<&str> {
    mounts.as_array()?.iter().find_map(|m| {
        let dest = m.get("destination")?.as_str()?;
        TOKEN_MOUNTS
            .contains(&dest.trim_end_matches('/'))
            .then(|| m.get("source")?.as_str())
            .flatten()
    })
}

/// The service account named by the token mounted into the container (`mounts`: a
/// config.json's `mounts`), if there is one, it is readable, and it belongs to `namespace` (when
/// the pod's namespace is known).
pub fn service_account(mounts: &Value, namespace: Option<&str>) -> Option<String> {
    let mut token = String::new();
    std::fs::File::open(Path::new(token_dir(mounts)?).join("token"))
        .ok()?
        .take(MAX_TOKEN)
        .read_to_string(&mut token)
        .ok()?;
    let (ns, name) = claims_account(&token)?;
    match namespace {
        Some(pod_ns) if pod_ns != ns => None,
        _ => Some(name),
    }
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
        let name = k.pointer("/serviceaccount/name").and_then(Value::as_str);
        if let (Some(ns), Some(name)) = (ns, name) {
            return Some((ns.to_owned(), name.to_owned()));
        }
    }
    // Legacy tokens: sub = system:serviceaccount:<namespace>:<name>
    let sub = claims.get("sub")?.as_str()?;
    let (ns, name) = sub
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')?;
    Some((ns.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode("{\"alg\":\"RS256\"}"),
            e.encode(claims)
        )
    }

    #[test]
    fn names_from_tokens() {
        assert_eq!(
            claims_account(&jwt(
                r#"{"kubernetes.io":{"namespace":"pay","serviceaccount":{"name":"billing"}}}"#
            )),
            Some(("pay".into(), "billing".into()))
        );
        assert_eq!(
            claims_account(&jwt(r#"{"sub":"system:serviceaccount:pay:api"}"#)),
            Some(("pay".into(), "api".into()))
        );
        assert_eq!(claims_account("garbage"), None);
    }

    #[test]
    fn from_mounted_token() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("token"),
            jwt(r#"{"sub":"system:serviceaccount:ns:sa1"}"#),
        )
        .unwrap();
        let mounts = serde_json::json!([{"destination": "/var/run/secrets/kubernetes.io/serviceaccount", "source": d.path()}]);
        assert_eq!(service_account(&mounts, None).as_deref(), Some("sa1"));
        assert_eq!(service_account(&mounts, Some("ns")).as_deref(), Some("sa1"));
        // a token of another namespace is not believed
        assert_eq!(service_account(&mounts, Some("other")), None);
        assert_eq!(service_account(&serde_json::json!([]), None), None);
        assert_eq!(service_account(&serde_json::json!({}), None), None);
    }
}

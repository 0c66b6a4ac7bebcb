//! The identity record: which container a process is, from which image, under which policy.
//!
//! One record per container incarnation, keyed by container id *and* bundle (containerd
//! namespaces reuse ids under different roots; the bundle path tells them apart). A process is
//! named by its pid *and* its start time (`/proc/<pid>/stat` field 22, clock ticks since boot)
//! plus the boot id, so a pid the kernel hands out again, or a record from before a reboot, is
//! never taken for the container.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A wall-clock time, stored as milliseconds since the epoch, written as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }
    pub fn as_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.as_system_time())
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s)
            .map(Timestamp::from)
            .map_err(serde::de::Error::custom)
    }
}

/// A string most records share with others (boot id, image, policy, namespace): the store keeps
/// one copy of each value ([`crate::store::Store`] interns them), 10,000 records of one image
/// then hold one image name, not 10,000.
pub type Text = std::sync::Arc<str>;

/// A small string map (image labels, profile digests), kept as a sorted `Vec` and written as a
/// JSON object. A `BTreeMap` allocates a ~0.5 KiB node even for one entry; with 10,000
/// containers in memory that alone would be several MiB.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct StrMap(Vec<(String, String)>);

impl StrMap {
    pub fn new() -> StrMap {
        StrMap(Vec::new())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    /// Set `key` (replacing its value).
    pub fn insert(&mut self, key: String, value: String) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }
    /// Set `key` unless it is there already.
    pub fn insert_if_absent(&mut self, key: String, value: String) {
        if let Err(i) = self.0.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            self.0.insert(i, (key, value));
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl FromIterator<(String, String)> for StrMap {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut m = StrMap::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m.0.shrink_to_fit();
        m
    }
}

impl IntoIterator for StrMap {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl std::ops::Index<&str> for StrMap {
    type Output = str;
    /// Panics if `key` is absent, like `BTreeMap`'s `Index` (tests and known keys only).
    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no key {key:?} in map"),
        }
    }
}

impl Serialize for StrMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for StrMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(d)?;
        Ok(map.into_iter().collect())
    }
}

/// Where a container is in its life. Only ever moves forward.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Registered by the `createRuntime` hook; the user's process has not started.
    #[default]
    Created,
    /// `poststart` ran.
    Running,
    /// The process is gone (kernel exit event, `poststop`, or reconciliation).
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// How the monitor learnt that a container exited, which says how much it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitSource {
    /// The kernel's process-exit event (netlink proc connector): code or signal are exact.
    Kernel,
    /// The process was seen as a zombie: `/proc/<pid>/stat` still held its exit code.
    Zombie,
    /// The `poststop` hook: OCI state carries no exit status, so it is unknown.
    Hook,
    /// Reconciliation found the process gone (monitor was down, or after a reboot).
    Reconciled,
}

/// The container process's exit: `code` for a normal exit, `signal` when it was killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Exit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub source: ExitSource,
}

impl Exit {
    /// From a wait(2)-style status word (the proc connector's `exit_code`, `/proc` field 52).
    pub fn from_wait_status(status: u32, source: ExitSource) -> Exit {
        let sig = status & 0x7f;
        if sig == 0 {
            Exit {
                code: i32::try_from((status >> 8) & 0xff).ok(),
                signal: None,
                source,
            }
        } else {
            Exit {
                code: None,
                signal: i32::try_from(sig).ok(),
                source,
            }
        }
    }

    pub fn unknown(source: ExitSource) -> Exit {
        Exit {
            code: None,
            signal: None,
            source,
        }
    }

    pub fn is_known(&self) -> bool {
        self.code.is_some() || self.signal.is_some()
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "{c}"),
            (None, Some(s)) => write!(f, "signal {s}"),
            (None, None) => f.write_str("unknown"),
        }
    }
}

/// Namespace inodes (`stat -L /proc/<pid>/ns/<kind>`), as seen from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Namespaces {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnt: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Image {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Text>,
    #[serde(default, skip_serializing_if = "StrMap::is_empty")]
    pub labels: StrMap,
}

impl Image {
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.digest.is_none() && self.labels.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Kubernetes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<Text>,
}

impl Kubernetes {
    pub fn is_empty(&self) -> bool {
        *self == Kubernetes::default()
    }
}

/// The ociguard policy the container was created under (from the annotations ociguard wrote).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicyRef {
    pub name: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Text>,
}

/// Everything known about one container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Identity {
    pub id: String,
    pub bundle: String,
    #[serde(default)]
    pub status: Status,
    /// containerd, cri-o, podman, docker, or absent when it cannot be told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Text>,
    /// The container's init process, in the host's pid namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `/proc/<pid>/stat` field 22 (clock ticks after boot): with the pid, names the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` when the pid was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default)]
    pub namespaces: Namespaces,
    #[serde(default, skip_serializing_if = "Image::is_empty")]
    pub image: Image,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Kubernetes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// Digests of the profiles in force: `seccomp`, later `apparmor`, `egress`.
    #[serde(default, skip_serializing_if = "StrMap::is_empty")]
    pub profiles: StrMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
}

/// What identifies a record: container id and bundle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub id: String,
    pub bundle: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.id, self.bundle)
    }
}

impl Identity {
    /// Add `image`, `image_digest` (unless there) and `service_account` to an event's detail.
    pub fn describe_image(&self, m: &mut serde_json::Map<String, serde_json::Value>) {
        m.insert("image".into(), self.image.name.as_deref().into());
        m.entry("image_digest")
            .or_insert_with(|| self.image.digest.as_deref().into());
        m.insert(
            "service_account".into(),
            self.kubernetes
                .as_ref()
                .and_then(|k| k.service_account.as_deref())
                .into(),
        );
    }

    pub fn key(&self) -> Key {
        Key {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.status != Status::Exited
    }

    /// The process this record names, when both halves are known.
    pub fn process(&self) -> Option<(u32, u64)> {
        Some((self.pid?, self.start_time?))
    }

    /// Cut every value that came from the container's side (annotations, image labels, names
    /// the engine copied from a pod spec) to [`excerpt::MAX_VALUE`] with a marker and the
    /// original length, and image labels to [`excerpt::MAX_ENTRIES`] of at most 512 bytes each: a
    /// record must fit the monitor's request limit whatever a pod author wrote.
    pub fn bound_untrusted(&mut self) {
        use ociguard_policy::excerpt::{self, MAX_VALUE};
        fn text(t: &mut Option<Text>) {
            if let Some(v) = t.as_mut().filter(|v| v.len() > MAX_VALUE) {
                *v = excerpt::bounded(v).into();
            }
        }
        fn string(s: &mut Option<String>) {
            if let Some(v) = s.as_mut() {
                excerpt::bound_in_place(v, MAX_VALUE);
            }
        }
        excerpt::bound_in_place(&mut self.id, 1024);
        string(&mut self.cgroup);
        text(&mut self.engine);
        text(&mut self.image.name);
        text(&mut self.image.digest);
        let labels = &self.image.labels;
        if labels.len() > excerpt::MAX_ENTRIES
            || labels.iter().any(|(k, v)| k.len() > 256 || v.len() > 512)
        {
            self.image.labels = excerpt::bounded_entries(
                labels.0.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                512,
            )
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        }
        if let Some(k) = self.kubernetes.as_mut() {
            text(&mut k.namespace);
            text(&mut k.service_account);
            string(&mut k.pod);
            string(&mut k.pod_uid);
            string(&mut k.container);
        }
        if let Some(p) = self.policy.as_mut() {
            if p.name.len() > MAX_VALUE {
                p.name = excerpt::bounded(&p.name).into();
            }
            text(&mut p.digest);
            text(&mut p.mode);
        }
    }

    /// Check a record received from a client before it is journaled.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 1024 {
            return Err("identity.id must be 1..=1024 bytes".to_owned());
        }
        if !self.bundle.starts_with('/') || self.bundle.len() > 4096 {
            return Err("identity.bundle must be an absolute path of at most 4096 bytes".into());
        }
        if self.pid == Some(0) {
            return Err("identity.pid must not be 0".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status() {
        assert_eq!(
            Exit::from_wait_status(42 << 8, ExitSource::Kernel).code,
            Some(42)
        );
        let killed = Exit::from_wait_status(9, ExitSource::Kernel);
        assert_eq!((killed.code, killed.signal), (None, Some(9)));
        assert_eq!(killed.to_string(), "signal 9");
        // core dumped bit does not hide the signal
        assert_eq!(
            Exit::from_wait_status(0x80 | 11, ExitSource::Kernel).signal,
            Some(11)
        );
    }

    #[test]
    fn untrusted_values_are_bounded() {
        let huge = "a".repeat(50 << 20);
        let mut id = Identity {
            id: "c1".into(),
            bundle: "/b".into(),
            image: Image {
                name: Some(huge.as_str().into()),
                digest: None,
                labels: (0..100)
                    .map(|i| {
                        (
                            format!("org.opencontainers.image.k{i:03}"),
                            "l".repeat(5000),
                        )
                    })
                    .collect(),
            },
            kubernetes: Some(Kubernetes {
                pod: Some(huge.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        id.bound_untrusted();
        let json = serde_json::to_string(&id).unwrap();
        assert!(json.len() < 64 * 1024, "{} bytes", json.len());
        assert!(json.contains(&format!("... ({} bytes)", 50 << 20)));
        assert_eq!(
            id.image.labels.get("..."),
            Some("36 more of 100 entries left out")
        );
        assert!(id.validate().is_ok());
    }

    #[test]
    fn strmap_is_a_json_object() {
        let m: StrMap = [
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]
        .into_iter()
        .collect();
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"a":"1","b":"2"}"#);
        let back: StrMap = serde_json::from_str(r#"{"b":"2","a":"1"}"#).unwrap();
        assert_eq!(back, m);
        assert_eq!(&m["b"], "2");
        let mut m2 = m.clone();
        m2.insert_if_absent("a".into(), "x".into());
        assert_eq!(m2.get("a"), Some("1"));
    }

    #[test]
    fn timestamp_roundtrip() {
        let t = Timestamp(1_700_000_000_123);
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, "\"2023-11-14T22:13:20.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&s).unwrap(), t);
    }

    #[test]
    fn compact_json_and_roundtrip() {
        let id = Identity {
            id: "c1".into(),
            bundle: "/b".into(),
            pid: Some(7),
            ..Default::default()
        };
        let s = serde_json::to_string(&id).unwrap();
        assert_eq!(
            s,
            r#"{"id":"c1","bundle":"/b","status":"created","pid":7,"namespaces":{}}"#
        );
        assert_eq!(serde_json::from_str::<Identity>(&s).unwrap(), id);
        assert!(id.validate().is_ok());
        let bad = Identity {
            bundle: "rel".into(),
            ..id
        };
        assert!(bad.validate().is_err());
    }
}

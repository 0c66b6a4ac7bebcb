//! Behaviour profiles: what the containers of one image, under one service identity, were seen
//! to do while a `learn` policy applied. ociguardd records them (`ociguard_monitor::profiles`);
//! `ociguardctl policy generate` turns one into a least-privilege policy ([`crate::generate`]);
//! a policy with `[profile] on_anomaly` reports what a container does outside its profile.
//!
//! A profile is bounded: at most [`MAX_EXECS`] programs, [`MAX_SECRETS`] secret paths with
//! [`MAX_READERS`] readers each, and [`MAX_DESTINATIONS`] destinations. Past the bound, programs
//! and secrets are counted as dropped (a generated policy then says so), and destinations are
//! summarised: addresses are widened to networks (/24, /16, /8 for IPv4; /64, /48, /32 for
//! IPv6) until they fit, so a workload that talked to 100,000 addresses still has a profile of a
//! few hundred networks that covers all of them.
//!
//! On disk a profile is one JSON document with the SHA-256 of its body: a file changed or cut
//! short by anything but ociguardd is refused, never half-read.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::digest::sha256;

/// Version of the on-disk document.
pub const FORMAT: u32 = 1;
/// Programs per profile.
pub const MAX_EXECS: usize = 1024;
/// Secret paths per profile.
pub const MAX_SECRETS: usize = 256;
/// Programs recorded as readers of one secret path.
pub const MAX_READERS: usize = 16;
/// Destinations per profile before they are summarised into networks.
pub const MAX_DESTINATIONS: usize = 1024;
/// Resolved files kept per program.
const MAX_RESOLVED: usize = 4;
/// Prefix lengths destinations are widened to, in turn, when there are too many.
const V4_LEVELS: [u8; 5] = [32, 24, 16, 8, 0];
const V6_LEVELS: [u8; 5] = [128, 64, 48, 32, 0];

/// Whose behaviour a profile describes: an image (by digest when known) run under a service
/// identity (the Kubernetes service account, else the image itself).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Subject {
    /// The image name as the first container of the profile had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `sha256:...` of the image manifest; absent when no engine said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `serviceaccount:NAMESPACE/NAME` or `image:NAME`.
    pub identity: String,
}

impl Subject {
    /// The subject of a container with this image and (Kubernetes) service account; `None`
    /// when nothing names the image: a profile must be tied to one.
    pub fn of(
        image: Option<&str>,
        digest: Option<&str>,
        namespace: Option<&str>,
        service_account: Option<&str>,
    ) -> Option<Subject> {
        let digest = digest.filter(|d| !d.is_empty()).map(str::to_owned);
        let image = image.filter(|i| !i.is_empty()).map(str::to_owned);
        let name = image.as_deref().or(digest.as_deref())?;
        let identity = match service_account.filter(|s| !s.is_empty()) {
            Some(sa) => format!("serviceaccount:{}/{sa}", namespace.unwrap_or("default")),
            None => format!("image:{}", name.split('@').next().unwrap_or(name)),
        };
        Some(Subject {
            image,
            digest,
            identity,
        })
    }

    /// The profile's id: the first 16 hex digits of SHA-256 over the image digest (or name
    /// when there is none) and the identity. Also its file name.
    pub fn id(&self) -> String {
        let image = self
            .digest
            .as_deref()
            .or(self.image.as_deref())
            .unwrap_or("");
        let digest = sha256(format!("{image}\0{}", self.identity).as_bytes());
        let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
        hex[..16].to_owned()
    }

    /// Does `sel` name this subject: its id (or a prefix of 6+ digits), its image digest, its
    /// image name (with or without tag or digest), its identity, or the service account as
    /// `NAMESPACE/NAME`?
    pub fn matches(&self, sel: &str) -> bool {
        if sel.is_empty() {
            return false;
        }
        let id = self.id();
        if sel.len() >= 6 && id.starts_with(sel) {
            return true;
        }
        if self.digest.as_deref() == Some(sel) || self.identity == sel {
            return true;
        }
        if self
            .identity
            .strip_prefix("serviceaccount:")
            .is_some_and(|sa| sa == sel)
        {
            return true;
        }
        self.image.as_deref().is_some_and(|img| {
            let repo = |s: &str| -> String {
                let s = s.split('@').next().unwrap_or(s);
                // a tag is after the last ':' that follows the last '/'
                match s.rfind(':') {
                    Some(c) if c > s.rfind('/').unwrap_or(0) => s[..c].to_owned(),
                    _ => s.to_owned(),
                }
            };
            img == sel || repo(img) == sel || repo(img) == repo(sel) && sel.contains(':')
        })
    }
}

/// One program the containers ran.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Exec {
    /// The files it resolved to (a symlink's target, the multi-call binary of an applet).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub resolved: BTreeSet<String>,
    /// Containers that ran it.
    pub containers: u64,
    /// It was a file written after the container started (a generated policy cannot then
    /// refuse such files).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_in_image: bool,
}

/// One destination (or, once summarised, network) the containers connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Destination {
    pub net: IpNet,
    /// IP protocol number (6 tcp, 17 udp, 1 icmp, ...).
    pub protocol: u8,
    /// Destination port; absent for protocols without one, or once ports were summarised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Destination {
    pub fn covers(&self, protocol: u8, addr: IpAddr, port: Option<u16>) -> bool {
        self.protocol == protocol
            && self.net.contains(&addr)
            && (self.port.is_none() || self.port == port)
    }
}

/// What did not fit (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dropped {
    #[serde(default)]
    pub execs: u64,
    #[serde(default)]
    pub secrets: u64,
}

/// A learned profile.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Profile {
    pub subject: Subject,
    /// Unix seconds of the first and the latest observation.
    pub first_seen: u64,
    pub last_seen: u64,
    /// Containers that contributed.
    pub containers: u64,
    /// The `learn` policies they ran under.
    #[serde(default)]
    pub policies: BTreeSet<String>,
    /// Program (as the guard names it: the path asked for, `/bin/APPLET` for an applet of a
    /// multi-call binary) → what is known of it.
    #[serde(default)]
    pub execs: BTreeMap<String, Exec>,
    /// Secret path (inside the container) → programs that read it.
    #[serde(default)]
    pub secrets: BTreeMap<String, BTreeSet<String>>,
    #[serde(default)]
    pub egress: BTreeSet<Destination>,
    /// Distinct destinations observed before any summarising.
    #[serde(default)]
    pub destinations_seen: u64,
    /// Index into the prefix levels the destinations are kept at (0: single addresses).
    #[serde(default)]
    pub egress_level: u8,
    /// Ports were dropped from destinations to make them fit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ports_summarised: bool,
    #[serde(default)]
    pub dropped: Dropped,
}

/// A profile as ociguardd stores it: the body and its digest.
#[derive(Debug, Serialize, Deserialize)]
struct Document {
    format: u32,
    sha256: String,
    profile: Box<serde_json::value::RawValue>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("not a profile document: {0}")]
    Parse(serde_json::Error),
    #[error("format {0} is not one this build reads (it reads {FORMAT})")]
    Format(u32),
    #[error("checksum mismatch: the file was changed or cut short outside ociguardd")]
    Checksum,
    #[error("profile body: {0}")]
    Body(serde_json::Error),
}

impl Profile {
    pub fn new(subject: Subject, now: u64) -> Profile {
        Profile {
            subject,
            first_seen: now,
            last_seen: now,
            ..Profile::default()
        }
    }

    /// The bytes ociguardd writes.
    pub fn encode(&self) -> Vec<u8> {
        // Maps of strings and numbers: serialisation cannot fail.
        let body = serde_json::to_string(self).unwrap_or_default();
        let doc = serde_json::json!({
            "format": FORMAT,
            "sha256": sha256(body.as_bytes()),
            "profile": serde_json::value::RawValue::from_string(body).ok(),
        });
        let mut out = serde_json::to_vec(&doc).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Read back what [`Profile::encode`] wrote, refusing anything else.
    pub fn decode(bytes: &[u8]) -> Result<Profile, ProfileError> {
        let doc: Document = serde_json::from_slice(bytes).map_err(ProfileError::Parse)?;
        if doc.format != FORMAT {
            return Err(ProfileError::Format(doc.format));
        }
        if sha256(doc.profile.get().as_bytes()) != doc.sha256 {
            return Err(ProfileError::Checksum);
        }
        let p: Profile = serde_json::from_str(doc.profile.get()).map_err(ProfileError::Body)?;
        Ok(p)
    }

    fn touch(&mut self, now: u64) {
        self.last_seen = self.last_seen.max(now);
        if self.first_seen == 0 || now < self.first_seen {
            self.first_seen = now;
        }
    }

    /// A container begins to contribute (`policy`: the learn policy it runs under).
    pub fn add_container(&mut self, policy: &str, now: u64) {
        self.containers += 1;
        if !self.policies.contains(policy) && self.policies.len() < 64 {
            self.policies.insert(policy.to_owned());
        }
        self.touch(now);
    }

    /// Record that a container ran `program` (resolved to `resolved`). Call once per container
    /// and program. False when it did not fit.
    pub fn add_exec(
        &mut self,
        program: &str,
        resolved: &str,
        not_in_image: bool,
        now: u64,
    ) -> bool {
        self.touch(now);
        if !self.execs.contains_key(program) && self.execs.len() >= MAX_EXECS {
            self.dropped.execs += 1;
            return false;
        }
        let e = self.execs.entry(program.to_owned()).or_default();
        e.containers += 1;
        e.not_in_image |= not_in_image;
        if !resolved.is_empty()
            && resolved != program
            && e.resolved.len() < MAX_RESOLVED
            && !e.resolved.contains(resolved)
        {
            e.resolved.insert(resolved.to_owned());
        }
        true
    }

    /// Record that `exe` read the secret `path`. False when it did not fit.
    pub fn add_secret(&mut self, path: &str, exe: &str, now: u64) -> bool {
        self.touch(now);
        if !self.secrets.contains_key(path) && self.secrets.len() >= MAX_SECRETS {
            self.dropped.secrets += 1;
            return false;
        }
        let readers = self.secrets.entry(path.to_owned()).or_default();
        if readers.contains(exe) {
            return true;
        }
        if readers.len() >= MAX_READERS {
            self.dropped.secrets += 1;
            return false;
        }
        readers.insert(exe.to_owned());
        true
    }

    fn level_prefix(&self, v6: bool) -> u8 {
        let i = usize::from(self.egress_level).min(V4_LEVELS.len() - 1);
        if v6 {
            V6_LEVELS[i]
        } else {
            V4_LEVELS[i]
        }
    }

    fn widen(&self, d: Destination) -> Destination {
        let prefix = self.level_prefix(matches!(d.net, IpNet::V6(_)));
        let net = if d.net.prefix_len() > prefix {
            IpNet::new(d.net.addr(), prefix)
                .map(|n| n.trunc())
                .unwrap_or(d.net)
        } else {
            d.net
        };
        Destination {
            net,
            port: if self.ports_summarised { None } else { d.port },
            ..d
        }
    }

    /// Record a connection to `addr` (a new one: call once per container and destination).
    pub fn add_destination(&mut self, protocol: u8, addr: IpAddr, port: Option<u16>, now: u64) {
        self.touch(now);
        if self.covers_destination(protocol, addr, port) {
            return;
        }
        self.destinations_seen += 1;
        let d = self.widen(Destination {
            net: IpNet::from(addr),
            protocol,
            port,
        });
        self.egress.insert(d);
        self.fit();
    }

    /// Widen the destinations a level at a time until they are within [`MAX_DESTINATIONS`].
    fn fit(&mut self) {
        while self.egress.len() > MAX_DESTINATIONS {
            if usize::from(self.egress_level) + 1 < V4_LEVELS.len() {
                self.egress_level += 1;
            } else if !self.ports_summarised {
                self.ports_summarised = true;
            } else {
                // (protocol, 0.0.0.0/0 or ::/0) pairs: at most 512; cannot be reached.
                break;
            }
            self.rewiden();
        }
    }

    /// Every destination at the current level (equal ones merge in the set).
    fn rewiden(&mut self) {
        let old = std::mem::take(&mut self.egress);
        self.egress = old.into_iter().map(|d| self.widen(d)).collect();
    }

    pub fn has_exec(&self, program: &str) -> bool {
        self.execs.contains_key(program)
    }

    pub fn covers_destination(&self, protocol: u8, addr: IpAddr, port: Option<u16>) -> bool {
        self.egress.iter().any(|d| d.covers(protocol, addr, port))
    }

    pub fn has_secret_reader(&self, path: &str, exe: &str) -> bool {
        self.secrets.get(path).is_some_and(|r| r.contains(exe))
    }

    /// Fold `other` (another profile, e.g. of the same service account with another image)
    /// into this one, within the same bounds.
    pub fn merge(&mut self, other: &Profile) {
        self.containers += other.containers;
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        for p in &other.policies {
            if self.policies.len() < 64 {
                self.policies.insert(p.clone());
            }
        }
        for (prog, e) in &other.execs {
            if !self.execs.contains_key(prog) && self.execs.len() >= MAX_EXECS {
                self.dropped.execs += 1;
                continue;
            }
            let mine = self.execs.entry(prog.clone()).or_default();
            mine.containers += e.containers;
            mine.not_in_image |= e.not_in_image;
            for r in &e.resolved {
                if mine.resolved.len() < MAX_RESOLVED {
                    mine.resolved.insert(r.clone());
                }
            }
        }
        for (path, readers) in &other.secrets {
            for r in readers {
                self.add_secret(path, r, self.last_seen);
            }
        }
        self.dropped.execs += other.dropped.execs;
        self.dropped.secrets += other.dropped.secrets;
        if other.egress_level > self.egress_level {
            self.egress_level = other.egress_level;
        }
        self.ports_summarised |= other.ports_summarised;
        // Both sides at the coarser level: an entry of one is then equal to, or disjoint
        // from, every entry of the other.
        self.egress.extend(other.egress.iter().copied());
        self.rewiden();
        self.fit();
        self.destinations_seen += other.destinations_seen;
    }

    /// The prefix lengths destinations are kept at now, for people: `None` while they are
    /// single addresses.
    pub fn summarised_to(&self) -> Option<(u8, u8)> {
        (self.egress_level > 0).then(|| (self.level_prefix(false), self.level_prefix(true)))
    }
}

/// `tcp`, `udp`, `icmp`, ... or the number.
pub fn protocol_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject {
        Subject::of(Some("localhost/app:1"), Some("sha256:abc"), None, None).unwrap()
    }

    #[test]
    fn subjects_and_selectors() {
        let s = subject();
        assert_eq!(s.identity, "image:localhost/app:1");
        assert_eq!(s.id().len(), 16);
        for sel in [
            "localhost/app:1",
            "localhost/app",
            "sha256:abc",
            "image:localhost/app:1",
        ] {
            assert!(s.matches(sel), "{sel}");
        }
        assert!(s.matches(&s.id()[..8]));
        assert!(!s.matches("localhost/other"));
        assert!(!s.matches(""));
        let sa = Subject::of(Some("app"), None, Some("shop"), Some("api")).unwrap();
        assert_eq!(sa.identity, "serviceaccount:shop/api");
        assert!(sa.matches("shop/api"));
        assert_ne!(sa.id(), s.id());
        assert!(Subject::of(None, None, None, Some("api")).is_none());
    }

    #[test]
    fn documents_round_trip_and_refuse_tampering() {
        let mut p = Profile::new(subject(), 100);
        p.add_container("learn", 100);
        p.add_exec("/bin/ls", "/bin/busybox", false, 101);
        p.add_secret("/run/secrets/token", "/bin/cat", 102);
        p.add_destination(6, "198.18.1.1".parse().unwrap(), Some(443), 103);
        let bytes = p.encode();
        assert_eq!(Profile::decode(&bytes).unwrap(), p);
        // A changed byte in the body: refused by the checksum, not read.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let tampered = text.replace("/bin/ls", "/bin/sh");
        assert!(matches!(
            Profile::decode(tampered.as_bytes()),
            Err(ProfileError::Checksum)
        ));
        assert!(matches!(
            Profile::decode(&bytes[..bytes.len() / 2]),
            Err(ProfileError::Parse(_))
        ));
        assert!(Profile::decode(b"\0\0\0").is_err());
    }

    #[test]
    fn bounded_execs_and_secrets() {
        let mut p = Profile::new(subject(), 1);
        for i in 0..MAX_EXECS + 10 {
            p.add_exec(&format!("/bin/p{i}"), "", false, 1);
        }
        assert_eq!(p.execs.len(), MAX_EXECS);
        assert_eq!(p.dropped.execs, 10);
        // Already known programs still count.
        assert!(p.add_exec("/bin/p0", "", false, 2));
        assert_eq!(p.execs["/bin/p0"].containers, 2);
        for i in 0..MAX_READERS + 1 {
            p.add_secret("/s", &format!("/bin/r{i}"), 1);
        }
        assert_eq!(p.secrets["/s"].len(), MAX_READERS);
        assert_eq!(p.dropped.secrets, 1);
    }

    #[test]
    fn a_hundred_thousand_destinations_are_summarised_and_still_covered() {
        let mut p = Profile::new(subject(), 1);
        let addr = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0xC612_0000 + i)); // 198.18/15
        for i in 0..100_000u32 {
            p.add_destination(6, addr(i), Some(443), 1);
        }
        assert!(p.egress.len() <= MAX_DESTINATIONS, "{}", p.egress.len());
        assert!(p.summarised_to().is_some());
        assert!(p.destinations_seen >= 1024);
        for i in [0, 77_777, 99_999] {
            assert!(p.covers_destination(6, addr(i), Some(443)));
        }
        assert!(!p.covers_destination(6, addr(5), Some(22)));
        assert!(!p.covers_destination(17, addr(5), Some(443)));
        // It round-trips at that size.
        assert_eq!(Profile::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn a_hundred_thousand_ports_drop_the_ports() {
        let mut p = Profile::new(subject(), 1);
        for i in 0..3000u16 {
            p.add_destination(17, "198.18.0.1".parse().unwrap(), Some(1000 + i), 1);
        }
        assert!(p.egress.len() <= MAX_DESTINATIONS);
        assert!(p.ports_summarised);
        assert!(p.covers_destination(17, "198.18.0.1".parse().unwrap(), Some(9)));
    }

    #[test]
    fn merge_unions_within_bounds() {
        let mut a = Profile::new(subject(), 10);
        a.add_container("learn", 10);
        a.add_exec("/bin/ls", "", false, 10);
        a.add_destination(6, "198.18.1.1".parse().unwrap(), Some(80), 10);
        let mut b = Profile::new(subject(), 5);
        b.add_container("learn", 20);
        b.add_exec("/bin/ls", "", false, 20);
        b.add_exec("/bin/wget", "", true, 20);
        b.add_secret("/s", "/bin/cat", 20);
        b.add_destination(6, "198.18.1.2".parse().unwrap(), Some(80), 20);
        a.merge(&b);
        assert_eq!(a.containers, 2);
        assert_eq!((a.first_seen, a.last_seen), (5, 20));
        assert_eq!(a.execs["/bin/ls"].containers, 2);
        assert!(a.execs["/bin/wget"].not_in_image);
        assert!(a.has_secret_reader("/s", "/bin/cat"));
        assert_eq!(a.egress.len(), 2);
    }
}

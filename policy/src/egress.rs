//! Egress allowlists (`[egress]` of a policy): validation, the nftables ruleset installed in the
//! container's network namespace, and the `config.json` edits that go with it.
//!
//! The ruleset is one table, `inet ociguard`, with one base chain on the `output` hook:
//!
//! ```text
//! table inet ociguard {
//!   chain output {
//!     type filter hook output priority filter; policy drop;
//!     oifname "lo" accept
//!     ct state established,related accept
//!     icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld-listener-report, mld2-listener-report } accept
//!     ct state new counter log prefix "ociguard-new " group <nflog_group>       # only to observe
//!     ip daddr { <resolvers> } meta l4proto { tcp, udp } th dport 53 accept    # only with host entries
//!     ip daddr { <allowed> } [meta l4proto ...] [th dport { ... }] accept      # one per (family, protocol, ports)
//!     counter log prefix "ociguard-deny " group <nflog_group>
//!     meta l4proto tcp reject with tcp reset                                   # on_deny = "reject"
//!     reject with icmpx admin-prohibited
//!   }
//! }
//! ```
//!
//! Allow entries are grouped by (family, protocol, ports) and their networks merged, so a policy
//! with thousands of addresses becomes a handful of rules with anonymous interval sets (one
//! lookup per new connection, not a linear walk). Under `audit` the chain's policy is `accept`
//! and nothing is rejected: denials are only counted and logged.
//!
//! To observe (a `learn` policy, or one with `[profile] on_anomaly`), the first packet of every
//! outbound connection is also logged, with [`OBSERVE_PREFIX`]: ociguardd records the
//! destinations into the container's profile or compares them with it. A policy that does not
//! restrict egress then gets an observe-only ruleset ([`observe_only`]): chain policy `accept`,
//! no allowlist, no denial log.
//!
//! The ruleset is rendered to nft's JSON with the `nftables` crate and applied by
//! `ociguard-hook egress` in one `nft -j -f -` transaction (all or nothing). Its canonical bytes
//! give the ruleset digest carried in the decision, the annotations and the identity record.
//!
//! Pure: name resolution and every file or namespace operation belong to the callers.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;

use ipnet::IpNet;
use nftables::expr::{
    Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, SetItem, CT,
};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{
    AnonymousCounter, Counter, Log, Match, Operator, Reject, RejectType, Statement,
};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook, RejectCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::capabilities;
use crate::change::Change;
use crate::config::Installer;
use crate::digest::sha256;
use crate::model::{
    AllowEntry, DenyVerdict, EgressMode, EgressRules, OnUnresolvable, Policy, PortSpec, Protocol,
};
use crate::oci_hooks::{self, EngineLog, HookEditError};

pub mod netlink;

/// The table ociguard owns in a container's network namespace (family `inet`).
pub const TABLE: &str = "ociguard";
/// Its only chain, on the `output` hook.
pub const CHAIN: &str = "output";
/// Prefix of the log statement on denials (NFLOG group from the node config).
pub const LOG_PREFIX: &str = "ociguard-deny ";
/// Prefix of the log statement on every new connection, when observing.
pub const OBSERVE_PREFIX: &str = "ociguard-new ";
/// `argv[1]` of the egress hook entry (`ociguard-hook egress ...`).
pub const HOOK_EVENT: &str = "egress";
/// Annotation carrying the ruleset digest (the identity hook records it as profile `egress`).
pub const DIGEST_ANNOTATION: &str = crate::annotations::EGRESS_DIGEST;
/// Capabilities that would let the container change or bypass its own rules.
pub const NET_CAPS: [&str; 2] = ["CAP_NET_ADMIN", "CAP_NET_RAW"];
/// Upper bound on `allow` entries per policy (nft handles far more; this bounds create time).
pub const MAX_ENTRIES: usize = 100_000;
/// Longest DNS name (RFC 1035).
const MAX_HOST: usize = 253;

/// Validate `[egress]`: every problem with the span to point at.
pub fn validate(policy: &Policy) -> Vec<(Range<usize>, String)> {
    let rules = &policy.egress;
    let mut out = Vec::new();
    if rules.allow.len() > MAX_ENTRIES {
        let span = rules.allow[MAX_ENTRIES].span();
        out.push((
            span,
            format!(
                "egress.allow has {} entries; at most {MAX_ENTRIES} are supported (use wider CIDRs)",
                rules.allow.len()
            ),
        ));
        return out;
    }
    if rules.mode != EgressMode::Allowlist {
        if let Some(first) = rules.allow.first() {
            out.push((
                first.span(),
                format!(
                    "egress.allow entries need mode = \"allowlist\" (mode is {:?})",
                    mode_str(rules.mode)
                ),
            ));
        }
    }
    for entry in &rules.allow {
        let span = entry.span();
        let e = entry.get_ref();
        match (&e.cidr, &e.host) {
            (Some(_), Some(h)) => out.push((
                h.span(),
                "an egress.allow entry has either cidr or host, not both".to_owned(),
            )),
            (None, None) => out.push((
                span.clone(),
                "an egress.allow entry needs cidr or host".to_owned(),
            )),
            (Some(c), None) => {
                if let Err(why) = parse_cidr(c.get_ref()) {
                    out.push((
                        c.span(),
                        format!("egress.allow cidr {:?}: {why}", c.get_ref()),
                    ));
                }
            }
            (None, Some(h)) => {
                if let Err(why) = check_host(h.get_ref()) {
                    out.push((
                        h.span(),
                        format!("egress.allow host {:?}: {why}", h.get_ref()),
                    ));
                }
            }
        }
        for p in &e.ports {
            if let Err(why) = parse_port(p.get_ref()) {
                out.push((p.span(), format!("egress.allow ports: {why}")));
            }
        }
    }
    out
}

pub fn mode_str(mode: EgressMode) -> &'static str {
    match mode {
        EgressMode::Unrestricted => "unrestricted",
        EgressMode::DenyAll => "deny-all",
        EgressMode::Allowlist => "allowlist",
    }
}

/// A network in CIDR notation, or a bare address (a /32 or /128). Host bits must be clear:
/// `10.0.0.1/8` is almost always a typo for either `10.0.0.1` or `10.0.0.0/8`.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| "not an IPv4 or IPv6 address or CIDR network".to_owned())?;
    if net.trunc() != net {
        return Err(format!(
            "host bits are set; write {} for the network or {} for the address",
            net.trunc(),
            net.addr()
        ));
    }
    Ok(net)
}

/// A DNS name: letters, digits, `-` and `_` in dot-separated labels of 1..=63 bytes.
pub fn check_host(s: &str) -> Result<(), String> {
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.parse::<IpAddr>().is_ok() {
        return Err("is an address; use cidr".to_owned());
    }
    if name.is_empty() || name.len() > MAX_HOST {
        return Err(format!("a DNS name has 1 to {MAX_HOST} characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("empty or over-long label".to_owned());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with '-'".to_owned());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-' and '_' are allowed".to_owned());
        }
    }
    Ok(())
}

/// One port or an inclusive range, 1..=65535.
pub fn parse_port(p: &PortSpec) -> Result<(u16, u16), String> {
    let one = |n: i64| -> Result<u16, String> {
        match u16::try_from(n) {
            Ok(0) | Err(_) => Err(format!("port {n} is not in 1..=65535")),
            Ok(p) => Ok(p),
        }
    };
    match p {
        PortSpec::Port(n) => one(*n).map(|p| (p, p)),
        PortSpec::Range(s) => {
            let parse = |t: &str| {
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{s:?} is not a port or a range like \"8000-8080\""))
                    .and_then(one)
            };
            let (a, b) = match s.split_once('-') {
                Some((a, b)) => (parse(a)?, parse(b)?),
                None => {
                    let p = parse(s)?;
                    (p, p)
                }
            };
            if a > b {
                return Err(format!("range {s:?} ends before it starts"));
            }
            Ok((a, b))
        }
    }
}

/// The host names a policy's entries need resolved, in order, without duplicates.
pub fn hosts(rules: &EgressRules) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for e in &rules.allow {
        if let Some(h) = &e.get_ref().host {
            if !out.contains(&h.get_ref().as_str()) {
                out.push(h.get_ref());
            }
        }
    }
    out
}

/// What the caller found out about the host names (at create time, on the host).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Name → its addresses.
    pub resolved: BTreeMap<String, Vec<IpAddr>>,
    /// Name → why it did not resolve.
    pub unresolved: BTreeMap<String, String>,
    /// DNS servers the container may query (port 53, TCP and UDP), when the policy names hosts.
    pub resolvers: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error("egress allow host {name:?} did not resolve ({reason}) and the policy says on_unresolvable = \"fail\"")]
    Unresolvable { name: String, reason: String },
    #[error("the container uses the host's network namespace, and egress is restricted ({mode}) by this policy: its rules would have to go into the node's own namespace. Run it with its own network namespace, or set egress.allow_host_network = true to let it run unrestricted")]
    HostNetwork { mode: &'static str },
    #[error("config.json field {field}: expected {expected}")]
    Shape {
        field: &'static str,
        expected: &'static str,
    },
    #[error(transparent)]
    Hooks(#[from] HookEditError),
}

/// The ruleset as data: what `ociguard-hook egress` installs, stored as canonical JSON under its
/// digest. Both installers compile from it: the in-process netlink batch ([`netlink`]) and nft's
/// JSON input ([`nft_json`]); people read [`Program::text`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// Chain policy `drop` and a final reject/drop (enforce), or `accept` with denials only
    /// counted and logged (audit).
    pub enforce: bool,
    pub on_deny: DenyVerdict,
    pub nflog_group: u16,
    /// Accept rules after the fixed ones (loopback, established, neighbour discovery), in order.
    pub accepts: Vec<Accept>,
    /// Log the first packet of every new connection with [`OBSERVE_PREFIX`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub observe: bool,
    /// `false`: the policy does not restrict egress; the ruleset only observes (no denial
    /// log, nothing refused).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub restricts: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One accept rule: destinations of one family, with one protocol and port set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    pub v6: bool,
    /// Merged (no overlaps), all of the rule's family, at least one.
    pub nets: Vec<IpNet>,
    #[serde(default)]
    pub protocol: Protocol,
    /// Inclusive, sorted, disjoint and not adjacent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<(u16, u16)>,
    /// The resolvers' rule (shown as such).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dns: bool,
}

impl Accept {
    /// The protocols the rule matches (`th dport` needs TCP or UDP).
    pub fn protocols(&self) -> &'static [Protocol] {
        match (self.protocol, self.ports.is_empty()) {
            (Protocol::Tcp, _) => &[Protocol::Tcp],
            (Protocol::Udp, _) => &[Protocol::Udp],
            (Protocol::Any, false) => &[Protocol::Tcp, Protocol::Udp],
            (Protocol::Any, true) => &[],
        }
    }
}

/// Rules before the accepts: loopback, established/related, neighbour discovery.
const FIXED_RULES: usize = 3;

impl Program {
    /// Rules in the chain.
    pub fn rules(&self) -> usize {
        let verdicts = match (self.enforce, self.on_deny) {
            (false, _) => 0,
            (true, DenyVerdict::Reject) => 2,
            (true, DenyVerdict::Drop) => 1,
        };
        FIXED_RULES
            + usize::from(self.observe)
            + self.accepts.len()
            + usize::from(self.restricts)
            + verdicts
    }

    /// Check what the renderer guarantees, for a program read back from a file: each rule's
    /// networks are non-empty, of its family and disjoint; its ports sorted, disjoint, non-zero.
    pub fn check(&self) -> Result<(), String> {
        for (i, a) in self.accepts.iter().enumerate() {
            let n = i + 1;
            if a.nets.is_empty() {
                return Err(format!("accept rule {n} has no destination"));
            }
            if let Some(net) = a.nets.iter().find(|x| matches!(x, IpNet::V6(_)) != a.v6) {
                return Err(format!(
                    "accept rule {n}: {net} is not of the rule's family"
                ));
            }
            let mut sorted = a.nets.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0].contains(&w[1])) {
                return Err(format!("accept rule {n}: overlapping networks"));
            }
            if a.ports.iter().any(|&(lo, hi)| lo == 0 || lo > hi)
                || a.ports
                    .windows(2)
                    .any(|w| u32::from(w[0].1) + 1 >= u32::from(w[1].0))
            {
                return Err(format!(
                    "accept rule {n}: ports must be sorted, disjoint ranges of 1-65535"
                ));
            }
        }
        Ok(())
    }

    /// The ruleset in nft's own syntax, for people (`ociguardctl explain`).
    pub fn text(&self) -> String {
        let mut text = format!(
            "table inet {TABLE} {{\n  chain {CHAIN} {{\n    type filter hook output priority filter; policy {};\n",
            if self.enforce { "drop" } else { "accept" }
        );
        text.push_str("    oifname \"lo\" accept\n");
        text.push_str("    ct state established,related accept\n");
        text.push_str("    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld-listener-report, mld2-listener-report } accept\n");
        if self.observe {
            let _ = writeln!(
                text,
                "    ct state new counter log prefix \"{OBSERVE_PREFIX}\" group {}",
                self.nflog_group
            );
        }
        for a in &self.accepts {
            let fam = if a.v6 { "ip6" } else { "ip" };
            let nets: Vec<String> = a
                .nets
                .iter()
                .map(|n| {
                    if n.prefix_len() == n.max_prefix_len() {
                        n.addr().to_string()
                    } else {
                        n.to_string()
                    }
                })
                .collect();
            let _ = write!(text, "    {fam} daddr {{ {} }}", nets.join(", "));
            let protos = a.protocols();
            if !protos.is_empty() {
                let names: Vec<&str> = protos.iter().map(|p| proto_name(*p)).collect();
                let _ = write!(text, " meta l4proto {{ {} }}", names.join(", "));
            }
            if !a.ports.is_empty() {
                let ports: Vec<String> = a
                    .ports
                    .iter()
                    .map(|&(lo, hi)| {
                        if lo == hi {
                            lo.to_string()
                        } else {
                            format!("{lo}-{hi}")
                        }
                    })
                    .collect();
                let _ = write!(text, " th dport {{ {} }}", ports.join(", "));
            }
            text.push_str(if a.dns {
                " accept  # DNS\n"
            } else {
                " accept\n"
            });
        }
        if self.restricts {
            let _ = writeln!(
                text,
                "    counter log prefix \"{LOG_PREFIX}\" group {}",
                self.nflog_group
            );
        }
        match (self.enforce, self.on_deny) {
            (false, _) => {}
            (true, DenyVerdict::Reject) => text.push_str(
                "    meta l4proto tcp reject with tcp reset\n    reject with icmpx admin-prohibited\n",
            ),
            (true, DenyVerdict::Drop) => text.push_str("    drop\n"),
        }
        text.push_str("  }\n}\n");
        text
    }
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Any => "any",
    }
}

/// The rendered ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ruleset {
    /// `sha256:...` of [`Ruleset::file`].
    pub digest: String,
    /// The [`Program`] as canonical JSON: the file the hook reads (the same policy and
    /// addresses give the same bytes).
    #[serde(skip)]
    pub file: String,
    #[serde(skip)]
    pub program: Program,
    /// [`Program::text`].
    #[serde(skip)]
    pub text: String,
    /// Rules in the chain, and addresses/networks allowed after merging.
    pub rules: usize,
    pub networks: usize,
}

/// (IPv6?, protocol, merged port ranges): entries sharing it become one rule.
type GroupKey = (bool, Protocol, Vec<(u16, u16)>);

/// Merge the entries into accept rules. Unresolved names contribute nothing (the caller has
/// already decided whether that is fatal).
fn accept_rules(rules: &EgressRules, res: &Resolution) -> Vec<Accept> {
    // (v6, protocol, ports) → networks; BTreeMap for a stable order.
    let mut groups: BTreeMap<GroupKey, Vec<IpNet>> = BTreeMap::new();
    for entry in &rules.allow {
        let e: &AllowEntry = entry.get_ref();
        let mut ports: Vec<(u16, u16)> = e
            .ports
            .iter()
            .filter_map(|p| parse_port(p.get_ref()).ok())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let ports = merge_ranges(ports);
        let nets: Vec<IpNet> = match (&e.cidr, &e.host) {
            (Some(c), _) => parse_cidr(c.get_ref()).into_iter().collect(),
            (None, Some(h)) => res
                .resolved
                .get(h.get_ref().as_str())
                .map(|addrs| addrs.iter().map(|a| IpNet::from(*a)).collect())
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        for net in nets {
            groups
                .entry((matches!(net, IpNet::V6(_)), e.protocol, ports.clone()))
                .or_default()
                .push(net);
        }
    }
    groups
        .into_iter()
        .map(|((v6, protocol, ports), nets)| Accept {
            v6,
            nets: IpNet::aggregate(&nets),
            protocol,
            ports,
            dns: false,
        })
        .collect()
}

/// Sorted, deduplicated ranges → overlapping and adjacent ones merged (nft rejects overlapping
/// intervals in one set).
fn merge_ranges(sorted: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(sorted.len());
    for (a, b) in sorted {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The program for `rules` (which must restrict egress). `enforce = false` gives the audit
/// form: same accepts, denials counted and logged but let through.
pub fn program(
    rules: &EgressRules,
    enforce: bool,
    res: &Resolution,
    nflog_group: u16,
) -> Result<Program, EgressError> {
    if rules.on_unresolvable == OnUnresolvable::Fail && enforce {
        if let Some((name, reason)) = res.unresolved.iter().next() {
            return Err(EgressError::Unresolvable {
                name: name.clone(),
                reason: reason.clone(),
            });
        }
    }
    let mut accepts = Vec::new();
    if !hosts(rules).is_empty() && !res.resolvers.is_empty() {
        for v6 in [false, true] {
            let nets: Vec<IpNet> = res
                .resolvers
                .iter()
                .map(|a| IpNet::from(*a))
                .filter(|n| matches!(n, IpNet::V6(_)) == v6)
                .collect();
            if !nets.is_empty() {
                accepts.push(Accept {
                    v6,
                    nets: IpNet::aggregate(&nets),
                    protocol: Protocol::Any,
                    ports: vec![(53, 53)],
                    dns: true,
                });
            }
        }
    }
    accepts.extend(accept_rules(rules, res));
    Ok(Program {
        enforce,
        on_deny: rules.on_deny,
        nflog_group,
        accepts,
        observe: false,
        restricts: true,
    })
}

/// The ruleset of a policy that does not restrict egress but observes it: every new
/// connection logged with [`OBSERVE_PREFIX`], nothing refused.
pub fn observe_only(nflog_group: u16) -> Program {
    Program {
        enforce: false,
        on_deny: DenyVerdict::default(),
        nflog_group,
        accepts: Vec::new(),
        observe: true,
        restricts: false,
    }
}

/// Render the ruleset for `rules`: the [`program`], its file and digest.
pub fn render(
    rules: &EgressRules,
    enforce: bool,
    res: &Resolution,
    nflog_group: u16,
) -> Result<Ruleset, EgressError> {
    Ok(ruleset(program(rules, enforce, res, nflog_group)?))
}

/// The file, digest and summary of `program`.
pub fn ruleset(program: Program) -> Ruleset {
    // Plain structs, strings and numbers: serialisation cannot fail.
    let file = serde_json::to_string(&program).unwrap_or_default();
    Ruleset {
        digest: sha256(file.as_bytes()),
        text: program.text(),
        rules: program.rules(),
        networks: program
            .accepts
            .iter()
            .filter(|a| !a.dns)
            .map(|a| a.nets.len())
            .sum(),
        file,
        program,
    }
}

/// `ct state <states>`
fn ct_state(states: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(CT {
            key: Cow::Borrowed("state"),
            family: None,
            dir: None,
        })),
        right: states,
        op: Operator::IN,
    })
}

fn s(v: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_owned()))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn set(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

fn net_expr(net: &IpNet) -> Expression<'static> {
    if net.prefix_len() == net.max_prefix_len() {
        s(&net.addr().to_string())
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(s(&net.addr().to_string())),
            len: u32::from(net.prefix_len()),
        }))
    }
}

fn l4proto() -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta {
        key: MetaKey::L4proto,
    }))
}

fn port_expr(&(a, b): &(u16, u16)) -> Expression<'static> {
    if a == b {
        Expression::Number(u32::from(a))
    } else {
        Expression::Range(Box::new(nftables::expr::Range {
            range: [
                Expression::Number(u32::from(a)),
                Expression::Number(u32::from(b)),
            ],
        }))
    }
}

/// One accept rule's statements.
fn accept_statements(a: &Accept) -> Vec<Statement<'static>> {
    let fam = if a.v6 { "ip6" } else { "ip" };
    let mut stmts = vec![eq(
        payload(fam, "daddr"),
        set(a.nets.iter().map(net_expr).collect()),
    )];
    let protos = a.protocols();
    if !protos.is_empty() {
        stmts.push(eq(
            l4proto(),
            set(protos.iter().map(|p| s(proto_name(*p))).collect()),
        ));
    }
    if !a.ports.is_empty() {
        stmts.push(eq(
            payload("th", "dport"),
            set(a.ports.iter().map(port_expr).collect()),
        ));
    }
    stmts.push(Statement::Accept(None));
    stmts
}

/// `program` as nft's JSON input (`nft -j -f -`): the `nft` installer's form of the ruleset.
pub fn nft_json(program: &Program) -> String {
    let table = || Table {
        family: NfFamily::INet,
        name: Cow::Borrowed(TABLE),
        handle: None,
    };
    let mut objects: Vec<NfObject<'static>> = vec![
        // Add-then-flush is idempotent and atomic: a retried create in a namespace that already
        // has the table replaces its rules in the same transaction. (Deleting the table instead
        // costs a kernel RCU grace period, ~15 ms, on every create.)
        NfObject::CmdObject(NfCmd::Add(NfListObject::Table(table()))),
        NfObject::CmdObject(NfCmd::Flush(FlushObject::Table(table()))),
        NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: Cow::Borrowed(TABLE),
            name: Cow::Borrowed(CHAIN),
            _type: Some(NfChainType::Filter),
            hook: Some(NfHook::Output),
            prio: Some(0),
            policy: Some(if program.enforce {
                NfChainPolicy::Drop
            } else {
                NfChainPolicy::Accept
            }),
            ..Chain::default()
        }))),
    ];
    let mut add = |stmts: Vec<Statement<'static>>| {
        objects.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: Cow::Borrowed(TABLE),
            chain: Cow::Borrowed(CHAIN),
            expr: Cow::Owned(stmts),
            ..Rule::default()
        }))));
    };
    add(vec![
        eq(
            Expression::Named(NamedExpression::Meta(Meta {
                key: MetaKey::Oifname,
            })),
            s("lo"),
        ),
        Statement::Accept(None),
    ]);
    add(vec![
        ct_state(Expression::List(vec![s("established"), s("related")])),
        Statement::Accept(None),
    ]);
    // Without neighbour discovery no IPv6 destination is reachable at all, allowed or not.
    add(vec![
        eq(
            payload("icmpv6", "type"),
            set(vec![
                s("nd-neighbor-solicit"),
                s("nd-neighbor-advert"),
                s("nd-router-solicit"),
                // The kernel's own multicast listener reports (link scope, never routed):
                // without them every interface change is an "egress denial".
                s("mld-listener-report"),
                s("mld2-listener-report"),
            ]),
        ),
        Statement::Accept(None),
    ]);
    if program.observe {
        add(vec![
            ct_state(s("new")),
            Statement::Counter(Counter::Anonymous(Some(AnonymousCounter::default()))),
            Statement::Log(Some(Log {
                prefix: Some(Cow::Borrowed(OBSERVE_PREFIX)),
                ..Log::new(Some(u32::from(program.nflog_group)))
            })),
        ]);
    }
    for a in &program.accepts {
        add(accept_statements(a));
    }
    if program.restricts {
        add(vec![
            Statement::Counter(Counter::Anonymous(Some(AnonymousCounter::default()))),
            Statement::Log(Some(Log {
                prefix: Some(Cow::Borrowed(LOG_PREFIX)),
                ..Log::new(Some(u32::from(program.nflog_group)))
            })),
        ]);
    }
    match (program.enforce, program.on_deny) {
        (false, _) => {}
        (true, DenyVerdict::Reject) => {
            add(vec![
                eq(l4proto(), s("tcp")),
                Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None))),
            ]);
            add(vec![Statement::Reject(Some(Reject::new(
                Some(RejectType::ICMPX),
                Some(RejectCode::AdminProhibited),
            )))]);
        }
        (true, DenyVerdict::Drop) => add(vec![Statement::Drop(None)]),
    }
    let doc = Nftables {
        objects: Cow::Owned(objects),
    };
    // Plain structs and strings: serialisation cannot fail.
    serde_json::to_string(&doc).unwrap_or_default()
}

/// The container's network namespace, as config.json describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// A new one, created by the runtime.
    New,
    /// An existing one joined by path (Podman, CNI, a pod sandbox's).
    Path(String),
    /// No `network` entry: the host's.
    Host,
}

pub fn network_namespace(spec: &Value) -> Netns {
    let entry = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .find(|n| n.get("type").and_then(Value::as_str) == Some("network"))
        });
    match entry {
        None => Netns::Host,
        Some(n) => match n.get("path").and_then(Value::as_str) {
            Some(p) if !p.is_empty() => Netns::Path(p.to_owned()),
            _ => Netns::New,
        },
    }
}

/// Where the hook and its inputs are (all absolute paths from the node config).
#[derive(Debug, Clone, Copy)]
pub struct HookTarget<'a> {
    pub hook_path: &'a Path,
    /// The rendered ruleset file `ociguard-hook egress` reads (content-addressed).
    pub ruleset_path: &'a Path,
    pub installer: Installer,
    /// `installer = "nft"` only.
    pub nft: &'a Path,
    pub engine_log: Option<EngineLog<'a>>,
}

pub fn hook_entry(target: &HookTarget<'_>, digest: &str, enforce: bool) -> Value {
    let mut args = vec![
        "--ruleset".to_owned(),
        target.ruleset_path.display().to_string(),
        "--digest".to_owned(),
        digest.to_owned(),
        "--installer".to_owned(),
        target.installer.as_str().to_owned(),
    ];
    if target.installer == Installer::Nft {
        args.extend(["--nft".to_owned(), target.nft.display().to_string()]);
    }
    args.extend([
        "--mode".to_owned(),
        if enforce { "enforce" } else { "audit" }.to_owned(),
    ]);
    oci_hooks::entry(target.hook_path, HOOK_EVENT, &args, target.engine_log)
}

fn object<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a mut Map<String, Value>, EgressError> {
    let v = parent
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().ok_or(EgressError::Shape {
        field,
        expected: "an object",
    })
}

/// Remove ociguard's egress hook and digest annotation (an unrestricted policy on a retried
/// create, or a policy that changed). Returns whether anything was removed.
pub fn remove(spec: &mut Value) -> bool {
    let changed = oci_hooks::remove(spec, "createRuntime", HOOK_EVENT);
    crate::annotations::set(spec, DIGEST_ANNOTATION, None) || changed
}

/// Apply a restricting `[egress]` to `spec`: the network namespace (refuse host networking or,
/// under `deny-all`, give the container an empty one), no `CAP_NET_ADMIN`/`CAP_NET_RAW`, the
/// createRuntime hook that installs `ruleset`, and the digest annotation. Idempotent.
///
/// Under audit (`enforce = false`) nothing that changes the container's behaviour is done: no
/// namespace, no capability change; the hook installs the logging-only ruleset. Returns the
/// changes (only [`Change::EgressNotEnforced`] for host networking the policy permits, or
/// under audit).
pub fn apply(
    spec: &mut Value,
    rules: &EgressRules,
    enforce: bool,
    ruleset: &Ruleset,
    target: &HookTarget<'_>,
) -> Result<Vec<Change>, EgressError> {
    oci_hooks::require_absolute(&[
        ("hook_path", target.hook_path),
        ("ruleset path", target.ruleset_path),
    ])?;
    if target.installer == Installer::Nft {
        oci_hooks::require_absolute(&[("nft", target.nft)])?;
    }
    let mut changes = Vec::new();
    let mode = mode_str(rules.mode);
    let host = network_namespace(spec) == Netns::Host;
    if host && rules.mode != EgressMode::DenyAll {
        let reason = if rules.allow_host_network {
            "host network namespace, permitted by egress.allow_host_network".to_owned()
        } else if enforce {
            return Err(EgressError::HostNetwork { mode });
        } else {
            format!(
                "{}; audit mode: started anyway",
                EgressError::HostNetwork { mode }
            )
        };
        remove(spec);
        changes.push(Change::EgressNotEnforced { reason });
        return Ok(changes);
    }
    let root = spec.as_object_mut().ok_or(EgressError::Shape {
        field: "(document)",
        expected: "an object",
    })?;
    if host {
        // deny-all: a new, empty namespace (loopback only) instead of the host's.
        if enforce {
            let linux = object(root, "linux", "linux")?;
            let ns = linux
                .entry("namespaces")
                .or_insert_with(|| Value::Array(Vec::new()));
            if ns.is_null() {
                *ns = Value::Array(Vec::new());
            }
            ns.as_array_mut()
                .ok_or(EgressError::Shape {
                    field: "linux.namespaces",
                    expected: "an array",
                })?
                .push(json!({"type": "network"}));
        }
        changes.push(Change::NetworkNamespaceInjected { applied: enforce });
    }
    // The container must not be able to change or bypass its rules.
    let net_caps: Vec<String> = NET_CAPS.iter().map(|c| (*c).to_owned()).collect();
    if let Some(process) = root.get_mut("process").and_then(Value::as_object_mut) {
        let removed = match process.get_mut("capabilities") {
            Some(Value::Object(caps)) if enforce => capabilities::drop_from(caps, &net_caps, false),
            Some(Value::Object(caps)) => {
                let mut copy = caps.clone();
                capabilities::drop_from(&mut copy, &net_caps, false)
            }
            _ => Vec::new(),
        };
        if !removed.is_empty() {
            changes.push(Change::CapabilitiesDropped {
                capabilities: removed,
                applied: enforce,
            });
        }
    }
    let list = oci_hooks::list_mut(root, "createRuntime")?;
    oci_hooks::place(
        list,
        HOOK_EVENT,
        hook_entry(target, &ruleset.digest, enforce),
    );
    object(root, "annotations", "annotations")?.insert(
        DIGEST_ANNOTATION.to_owned(),
        Value::String(ruleset.digest.clone()),
    );
    changes.push(Change::Egress {
        mode: rules.mode,
        on_deny: rules.on_deny,
        ruleset_digest: ruleset.digest.clone(),
        rules: ruleset.rules,
        networks: ruleset.networks,
        hook: target.hook_path.display().to_string(),
        applied: enforce,
    });
    Ok(changes)
}

/// The resolution facts as they go into the decision (addresses as strings).
pub fn resolution_change(res: &Resolution) -> Option<Change> {
    if res.resolved.is_empty() && res.unresolved.is_empty() {
        return None;
    }
    Some(Change::EgressHostsResolved {
        resolved: res
            .resolved
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(ToString::to_string).collect()))
            .collect(),
        unresolved: res.unresolved.clone(),
        resolvers: res.resolvers.iter().map(ToString::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_policy;
    use crate::oci_hooks::HOOK_ENV;

    fn policy(text: &str) -> Policy {
        parse_policy(Path::new("p.toml"), text).unwrap().policy
    }

    fn errors(text: &str) -> Vec<String> {
        match parse_policy(Path::new("p.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    const ALLOW: &str = r#"name = "default"
[egress]
mode = "allowlist"
[[egress.allow]]
cidr = "198.18.1.0/24"
protocol = "tcp"
ports = [8080, "9000-9010"]
[[egress.allow]]
cidr = "198.18.3.4"
protocol = "tcp"
ports = [8080]
[[egress.allow]]
host = "api.example.test"
ports = [443]
[[egress.allow]]
cidr = "2001:db8::/32"
"#;

    #[test]
    fn validation_points_at_the_line() {
        let bad = [
            (
                "cidr = \"198.18.1.1/24\"",
                "p.toml:5:",
                "host bits are set; write 198.18.1.0/24",
            ),
            (
                "cidr = \"198.18.1.0/33\"",
                "p.toml:5:",
                "not an IPv4 or IPv6",
            ),
            ("cidr = \"example\"", "p.toml:5:", "not an IPv4"),
            (
                "host = \"10.0.0.1\"",
                "p.toml:5:",
                "is an address; use cidr",
            ),
            ("host = \"bad host\"", "p.toml:5:", "only letters"),
            (
                "cidr = \"10.0.0.0/8\"\nports = [0]",
                "p.toml:6:",
                "port 0 is not in 1..=65535",
            ),
            (
                "cidr = \"10.0.0.0/8\"\nports = [70000]",
                "p.toml:6:",
                "port 70000",
            ),
            (
                "cidr = \"10.0.0.0/8\"\nports = [\"90-80\"]",
                "p.toml:6:",
                "ends before it starts",
            ),
            (
                "cidr = \"10.0.0.0/8\"\nports = [\"http\"]",
                "p.toml:6:",
                "not a port or a range",
            ),
            (
                "cidr = \"10.0.0.0/8\"\nprotocol = \"sctp\"",
                "p.toml:6:",
                "unknown variant `sctp`",
            ),
            (
                "cidr = \"10.0.0.0/8\"\nhost = \"a.test\"",
                "p.toml:6:",
                "either cidr or host",
            ),
            ("ports = [80]", "p.toml:4:", "needs cidr or host"),
            (
                "cidr = \"10.0.0.0/8\"\nport = 80",
                "p.toml:6:",
                "unknown field `port`",
            ),
        ];
        for (entry, at, why) in bad {
            let text = format!(
                "name = \"default\"\n[egress]\nmode = \"allowlist\"\n[[egress.allow]]\n{entry}\n"
            );
            let errs = errors(&text);
            assert_eq!(errs.len(), 1, "{entry}: {errs:?}");
            assert!(errs[0].starts_with(at), "{entry}: {}", errs[0]);
            assert!(errs[0].contains(why), "{entry}: {}", errs[0]);
        }
        let errs = errors("name = \"default\"\n[egress]\nmode = \"deny-all\"\n[[egress.allow]]\ncidr = \"10.0.0.0/8\"\n");
        assert!(errs[0].contains("need mode = \"allowlist\""), "{errs:?}");
        let errs = errors("name = \"default\"\n[egress]\nmode = \"open\"\n");
        assert!(
            errs[0].starts_with("p.toml:3:") && errs[0].contains("unknown variant"),
            "{errs:?}"
        );
        let errs = errors("name = \"default\"\n[egress]\non_deny = \"ignore\"\n");
        assert!(errs[0].contains("unknown variant `ignore`"), "{errs:?}");
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!(parse_port(&PortSpec::Port(443)), Ok((443, 443)));
        assert_eq!(
            parse_port(&PortSpec::Range("8000-8080".into())),
            Ok((8000, 8080))
        );
        assert_eq!(parse_port(&PortSpec::Range(" 53 ".into())), Ok((53, 53)));
        assert!(parse_port(&PortSpec::Range("1-65536".into())).is_err());
        assert!(parse_port(&PortSpec::Port(-1)).is_err());
        assert_eq!(
            merge_ranges(vec![(1, 5), (3, 9), (10, 10), (12, 20)]),
            vec![(1, 10), (12, 20)]
        );
        assert_eq!(merge_ranges(vec![(65535, 65535)]), vec![(65535, 65535)]);
    }

    fn resolution() -> Resolution {
        Resolution {
            resolved: [(
                "api.example.test".to_owned(),
                vec!["198.18.5.5".parse().unwrap(), "198.18.5.6".parse().unwrap()],
            )]
            .into_iter()
            .collect(),
            unresolved: BTreeMap::new(),
            resolvers: vec!["198.18.0.53".parse().unwrap()],
        }
    }

    #[test]
    fn ruleset_groups_entries_and_is_stable() {
        let p = policy(ALLOW);
        let r = render(&p.egress, true, &resolution(), 100).unwrap();
        let expected = "table inet ociguard {
  chain output {
    type filter hook output priority filter; policy drop;
    oifname \"lo\" accept
    ct state established,related accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld-listener-report, mld2-listener-report } accept
    ip daddr { 198.18.0.53 } meta l4proto { tcp, udp } th dport { 53 } accept  # DNS
    ip daddr { 198.18.5.5, 198.18.5.6 } meta l4proto { tcp, udp } th dport { 443 } accept
    ip daddr { 198.18.3.4 } meta l4proto { tcp } th dport { 8080 } accept
    ip daddr { 198.18.1.0/24 } meta l4proto { tcp } th dport { 8080, 9000-9010 } accept
    ip6 daddr { 2001:db8::/32 } accept
    counter log prefix \"ociguard-deny \" group 100
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }
}
";
        assert_eq!(r.text, expected);
        assert_eq!(r.rules, 11);
        assert_eq!(r.networks, 5);
        let again = render(&p.egress, true, &resolution(), 100).unwrap();
        assert_eq!(r, again);
        assert!(r.digest.starts_with("sha256:"));
        // The file is the program, and reads back as the same program.
        let back: Program = serde_json::from_str(&r.file).unwrap();
        assert_eq!(back, r.program);
        assert_eq!(back.check(), Ok(()));
        let nft = nft_json(&r.program);
        let v: Value = serde_json::from_str(&nft).unwrap();
        let objs = v["nftables"].as_array().unwrap();
        assert_eq!(
            objs[0],
            json!({"add": {"table": {"family": "inet", "name": "ociguard"}}})
        );
        assert_eq!(
            objs[1],
            json!({"flush": {"table": {"family": "inet", "name": "ociguard"}}})
        );
        assert_eq!(objs[2]["add"]["chain"]["policy"], "drop");
        assert_eq!(objs[2]["add"]["chain"]["hook"], "output");
        assert_eq!(objs.len(), 3 + r.rules);
        // The nft JSON parses back into the crate's model (what nft itself is given).
        let back: Nftables<'_> = serde_json::from_str(&nft).unwrap();
        assert_eq!(back.objects.len(), objs.len());

        let other = render(&p.egress, true, &Resolution::default(), 100).unwrap();
        assert_ne!(other.digest, r.digest, "addresses are part of the digest");
        let audit = render(&p.egress, false, &resolution(), 100).unwrap();
        assert!(
            audit.text.contains("policy accept;") && !audit.text.contains("reject"),
            "{}",
            audit.text
        );
    }

    #[test]
    fn unresolvable_names() {
        let p = policy(ALLOW);
        let mut res = resolution();
        res.resolved.clear();
        res.unresolved
            .insert("api.example.test".into(), "no such host".into());
        let err = render(&p.egress, true, &res, 1).unwrap_err();
        assert!(
            err.to_string().contains("api.example.test")
                && err.to_string().contains("no such host"),
            "{err}"
        );
        // audit never refuses
        assert!(render(&p.egress, false, &res, 1).is_ok());
        let skip = policy(&ALLOW.replace(
            "mode = \"allowlist\"",
            "mode = \"allowlist\"\non_unresolvable = \"skip\"",
        ));
        let r = render(&skip.egress, true, &res, 1).unwrap();
        assert!(!r.text.contains("443"), "{}", r.text);
    }

    #[test]
    fn deny_all_and_drop() {
        let p = policy("name = \"default\"\n[egress]\nmode = \"deny-all\"\non_deny = \"drop\"\n");
        let r = render(&p.egress, true, &Resolution::default(), 5).unwrap();
        assert!(
            r.text.ends_with("group 5\n    drop\n  }\n}\n"),
            "{}",
            r.text
        );
        assert_eq!(r.networks, 0);
    }

    #[test]
    fn thousands_of_entries_merge() {
        let mut text = String::from("name = \"default\"\n[egress]\nmode = \"allowlist\"\n");
        for i in 0..10_000u32 {
            let _ = write!(
                text,
                "[[egress.allow]]\ncidr = \"10.{}.{}.{}\"\nprotocol = \"tcp\"\nports = [443]\n",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            );
        }
        let p = policy(&text);
        let r = render(&p.egress, true, &Resolution::default(), 1).unwrap();
        // 10.0.0.0 .. 10.0.39.15: merged into a few prefixes, one rule.
        assert!(r.networks < 10, "{}", r.networks);
        assert_eq!(r.text.matches("daddr").count(), 1);
    }

    fn target() -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        (
            "/usr/local/bin/ociguard-hook".into(),
            "/run/ociguard/egress/abc.json".into(),
            "/usr/sbin/nft".into(),
        )
    }

    #[test]
    fn spec_edits() {
        let p = policy(ALLOW);
        let r = render(&p.egress, true, &resolution(), 100).unwrap();
        let (h, rs, nft) = target();
        let t = HookTarget {
            hook_path: &h,
            ruleset_path: &rs,
            installer: Installer::Netlink,
            nft: &nft,
            engine_log: None,
        };
        let mut spec = json!({
            "process": {"capabilities": {"bounding": ["CAP_NET_RAW", "CAP_CHOWN", "CAP_NET_ADMIN"], "effective": ["CAP_NET_RAW"]}},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}]},
            "hooks": {"createRuntime": [{"path": "/usr/bin/other"}]}
        });
        let changes = apply(&mut spec, &p.egress, true, &r, &t).unwrap();
        assert_eq!(
            spec["process"]["capabilities"]["bounding"],
            json!(["CAP_CHOWN"])
        );
        assert_eq!(spec["process"]["capabilities"]["effective"], json!([]));
        let cr = spec["hooks"]["createRuntime"].as_array().unwrap();
        assert_eq!(cr.len(), 2);
        assert_eq!(cr[0]["path"], "/usr/bin/other");
        assert_eq!(cr[1]["args"][1], "egress");
        assert_eq!(cr[1]["args"][5], json!(r.digest));
        assert_eq!(cr[1]["env"], json!([HOOK_ENV]));
        assert_eq!(spec["annotations"][DIGEST_ANNOTATION], json!(r.digest));
        assert!(changes.iter().any(|c| matches!(c, Change::CapabilitiesDropped { capabilities, applied: true } if capabilities.len() == 2)));
        assert!(changes.iter().any(|c| matches!(c, Change::Egress { .. })));
        let before = spec.clone();
        apply(&mut spec, &p.egress, true, &r, &t).unwrap();
        assert_eq!(spec, before, "a retried create changes nothing");
        assert!(remove(&mut spec));
        assert_eq!(spec["hooks"]["createRuntime"].as_array().unwrap().len(), 1);
        assert!(spec["annotations"].get(DIGEST_ANNOTATION).is_none());
    }

    #[test]
    fn host_network() {
        let (h, rs, nft) = target();
        let t = HookTarget {
            hook_path: &h,
            ruleset_path: &rs,
            installer: Installer::Netlink,
            nft: &nft,
            engine_log: None,
        };
        let allow = policy(ALLOW);
        let r = render(&allow.egress, true, &resolution(), 1).unwrap();
        let host = json!({"process": {}, "linux": {"namespaces": [{"type": "pid"}]}});
        let mut spec = host.clone();
        let err = apply(&mut spec, &allow.egress, true, &r, &t).unwrap_err();
        assert!(matches!(err, EgressError::HostNetwork { .. }));
        assert!(
            err.to_string().contains("host's network namespace"),
            "{err}"
        );
        // audit: recorded, unchanged behaviour
        let mut spec = host.clone();
        let ch = apply(&mut spec, &allow.egress, false, &r, &t).unwrap();
        assert!(matches!(&ch[0], Change::EgressNotEnforced { .. }));
        assert!(spec.pointer("/hooks/createRuntime").is_none());
        // permitted by the policy
        let permit = policy(&ALLOW.replace(
            "mode = \"allowlist\"",
            "mode = \"allowlist\"\nallow_host_network = true",
        ));
        let mut spec = host.clone();
        let ch = apply(&mut spec, &permit.egress, true, &r, &t).unwrap();
        assert!(matches!(&ch[0], Change::EgressNotEnforced { .. }));
        // deny-all gets an empty namespace of its own
        let deny = policy("name = \"default\"\n[egress]\nmode = \"deny-all\"\n");
        let r = render(&deny.egress, true, &Resolution::default(), 1).unwrap();
        let mut spec = host.clone();
        apply(&mut spec, &deny.egress, true, &r, &t).unwrap();
        assert_eq!(network_namespace(&spec), Netns::New);
        let once = spec.clone();
        apply(&mut spec, &deny.egress, true, &r, &t).unwrap();
        assert_eq!(spec, once);
        assert_eq!(
            network_namespace(
                &json!({"linux": {"namespaces": [{"type": "network", "path": "/run/netns/a"}]}})
            ),
            Netns::Path("/run/netns/a".into())
        );
    }
}

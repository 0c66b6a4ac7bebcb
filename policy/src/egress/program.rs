//! The ruleset as data ([`Program`]), built from a policy and what the host resolved, and its
//! renderings: nft's JSON input, the text people read, and the canonical bytes of its digest.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

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

use super::{
    hosts, parse_cidr, parse_port, EgressError, Resolution, CHAIN, LOG_PREFIX, OBSERVE_PREFIX,
    TABLE,
};
use crate::digest::sha256;
use crate::model::{AllowEntry, DenyVerdict, EgressRules, OnUnresolvable, Protocol};
/// The ruleset as data: what `ociguard-hook egress` installs, stored as canonical JSON under its
/// digest. Both installers compile from it: the in-process netlink batch ([`netlink`](super::netlink)) and nft's
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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::egress::tests::{policy, resolution, ALLOW};
    use crate::model::PortSpec;

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
}

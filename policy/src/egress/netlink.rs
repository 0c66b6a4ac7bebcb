//! The egress [`Program`] as one nf_tables netlink batch: what `ociguard-hook egress` sends on a
//! `NETLINK_NETFILTER` socket inside the container's network namespace, instead of starting
//! `nft` (whose process start-up is most of its cost).
//!
//! Messages are built with the `netlink-packet-netfilter` crate. The batch is the same ruleset
//! nft builds from [`super::nft_json`], expression for expression (the `egress` integration tests
//! install both and compare `nft list` output): `nft`'s own shortcuts are reproduced — one address
//! or port is a `cmp`, one prefix a masked `cmp`, one port range two `cmp`s, and only larger groups
//! become anonymous sets (intervals when they hold prefixes or ranges).
//!
//! The kernel applies a batch in one transaction: either every message is committed or none is.
//! Pure: no sockets here.

use ipnet::IpNet;
use netlink_packet_core::{
    DefaultNla, NetlinkMessage, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, Immediate, InetHookNumber, ListAttribute, Lookup, Meta, MetaKey, NfTablesMessage,
    Operator, Payload, Register, RuleAttribute, RuleMessage, SetAttribute, SetDescription,
    SetElementAttribute, SetElementFlags, SetElementList, SetElementMessage, SetFlags, SetMessage,
    TableAttribute, TableMessage, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use super::{Accept, Program, CHAIN, LOG_PREFIX, OBSERVE_PREFIX, TABLE};
use crate::model::{DenyVerdict, Protocol};

/// `NFNL_SUBSYS_NFTABLES`: the batch's resource id.
const SUBSYS_NFTABLES: u16 = 10;
/// Verdict codes (`NF_DROP`, `NF_ACCEPT`).
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// `NFPROTO_IPV4`, `NFPROTO_IPV6` as `meta nfproto` loads them.
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// Payload bases.
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;
/// nft's datatypes (informational for the kernel; `nft list` prints the set with them).
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_ICMP6_TYPE: u32 = 29;
/// Attributes of expressions the crate has no types for.
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
const NFTA_LOG_GROUP: u16 = 1;
const NFTA_LOG_PREFIX: u16 = 2;
const NFTA_REJECT_TYPE: u16 = 1;
const NFTA_REJECT_ICMP_CODE: u16 = 2;
const NFT_REJECT_TCP_RST: u32 = 1;
const NFT_REJECT_ICMPX_UNREACH: u32 = 2;
const NFT_REJECT_ICMPX_ADMIN_PROHIBITED: u8 = 3;
/// `ct state` bits.
const CT_ESTABLISHED: u32 = 1 << 1;
const CT_RELATED: u32 = 1 << 2;
const CT_NEW: u32 = 1 << 3;
/// ICMPv6 neighbour discovery: router solicitation, neighbour solicitation and advertisement.
/// Neighbour discovery (133 router solicitation, 135/136 neighbour solicitation/advertisement)
/// and the kernel's multicast listener reports (131 MLDv1, 143 MLDv2; link scope).
const ND_TYPES: [u8; 5] = [131, 133, 135, 136, 143];
const IFNAMSIZ: usize = 16;
/// Set elements per NEWSETELEM message: an attribute's length is 16 bits, so one message's
/// element list must stay under 64 KiB (an IPv6 interval boundary is ~36 bytes).
const ELEMENTS_PER_MESSAGE: usize = 1024;
/// An anonymous set's name; the kernel fills in the number.
const ANON_SET: &str = "__set%d";

/// A batch ready for `send`: begin, the messages, end. Messages `1..=acks.len()` ask for an
/// acknowledgement; the kernel answers each, or with the error that aborted the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    /// What message `seq` (1-based) created, for error messages.
    pub acks: Vec<String>,
}

impl Batch {
    /// The object message `seq` created, if it is one of ours.
    pub fn what(&self, seq: u32) -> Option<&str> {
        let i = usize::try_from(seq).ok()?.checked_sub(1)?;
        self.acks.get(i).map(String::as_str)
    }
}

type Expr = ListAttribute<ExpressionAttribute>;

struct Builder {
    bytes: Vec<u8>,
    acks: Vec<String>,
    next_set: u32,
}

impl Builder {
    fn push(&mut self, seq: u32, flags: u16, family: NetfilterProtoFamily, inner: NfOrControl) {
        let header = match inner {
            NfOrControl::Control(_) => NetfilterHeader::new(family, 0, SUBSYS_NFTABLES),
            NfOrControl::Nf(_) => NetfilterHeader::new(family, 0, 0),
        };
        let mut msg = NetlinkMessage::from(match inner {
            NfOrControl::Control(c) => NetfilterMessage::new(header, c),
            NfOrControl::Nf(m) => NetfilterMessage::new(header, m),
        });
        msg.header.flags = flags;
        msg.header.sequence_number = seq;
        msg.finalize();
        let at = self.bytes.len();
        self.bytes.resize(at + msg.buffer_len(), 0);
        msg.serialize(&mut self.bytes[at..]);
    }

    /// An object message that is acknowledged.
    fn object(&mut self, flags: u16, msg: NfTablesMessage, what: String) {
        self.acks.push(what);
        let seq = u32::try_from(self.acks.len()).unwrap_or(u32::MAX);
        self.push(
            seq,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            NetfilterProtoFamily::Inet,
            NfOrControl::Nf(msg),
        );
    }

    /// An anonymous constant set with `keys` (start, optional exclusive end) in the table; returns
    /// the lookup expression that matches register 1 against it.
    fn set(
        &mut self,
        key_type: u32,
        key_len: u32,
        keys: &[(Vec<u8>, Option<Vec<u8>>)],
        interval: bool,
        rule: usize,
    ) -> Expr {
        self.next_set += 1;
        let id = self.next_set;
        let mut flags = SetFlags::Anonymous | SetFlags::Constant;
        if interval {
            flags |= SetFlags::Interval;
        }
        let mut elements: Vec<ListAttribute<SetElementAttribute>> = Vec::new();
        let element = |key: &[u8], end: bool| {
            let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(key.to_vec()))];
            if end {
                attrs.push(SetElementAttribute::Flags(SetElementFlags::IntervalEnd));
            }
            ListAttribute::Element(attrs)
        };
        if interval && keys.first().is_some_and(|(k, _)| k.iter().any(|b| *b != 0)) {
            // nft's convention: the range below the first element is closed explicitly.
            elements.push(element(&vec![0; key_len as usize], true));
        }
        for (start, end) in keys {
            elements.push(element(start, false));
            if let Some(end) = end.as_deref().filter(|_| interval) {
                elements.push(element(end, true));
            }
        }
        let size = u32::try_from(elements.len()).unwrap_or(u32::MAX);
        self.object(
            NLM_F_CREATE,
            NfTablesMessage::NewSet(SetMessage {
                attributes: vec![
                    SetAttribute::Table(TABLE.to_owned()),
                    SetAttribute::Name(ANON_SET.to_owned()),
                    SetAttribute::Flags(flags),
                    SetAttribute::KeyType(key_type),
                    SetAttribute::KeyLen(key_len),
                    SetAttribute::Id(id),
                    SetAttribute::Description(vec![SetDescription::Size(size)]),
                ],
            }),
            format!("set {id} of rule {rule}"),
        );
        let mut rest = elements;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(ELEMENTS_PER_MESSAGE));
            let chunk = std::mem::replace(&mut rest, tail);
            let n = chunk.len();
            self.object(
                NLM_F_CREATE,
                NfTablesMessage::NewSetElement(SetElementMessage {
                    attributes: vec![
                        SetElementList::Table(TABLE.to_owned()),
                        SetElementList::Set(ANON_SET.to_owned()),
                        SetElementList::SetId(id),
                        SetElementList::Elements(chunk),
                    ],
                }),
                format!("{n} elements of set {id} (rule {rule})"),
            );
        }
        Expressions::Lookup(vec![
            Lookup::Set(ANON_SET.to_owned()),
            Lookup::SetId(id),
            Lookup::SourceRegister(Register::Reg1),
        ])
        .into()
    }

    fn rule(&mut self, exprs: Vec<Expr>, n: usize) {
        self.object(
            NLM_F_CREATE | NLM_F_APPEND,
            NfTablesMessage::NewRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(TABLE.to_owned()),
                    RuleAttribute::Chain(CHAIN.to_owned()),
                    RuleAttribute::Expressions(exprs),
                ],
            }),
            format!("rule {n}"),
        );
    }
}

enum NfOrControl {
    Nf(NfTablesMessage),
    Control(ControlMessage),
}

fn meta(key: MetaKey) -> Expr {
    Expressions::Meta(vec![
        Meta::DestinationRegister(Register::Reg1),
        Meta::Key(key),
    ])
    .into()
}

fn cmp(op: Operator, value: Vec<u8>) -> Expr {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(value)),
    ])
    .into()
}

fn load(base: u32, offset: u32, len: u32) -> Expr {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

fn bitwise(mask: Vec<u8>) -> Expr {
    let len = u32::try_from(mask.len()).unwrap_or(0);
    let xor = vec![0; mask.len()];
    Expressions::Bitwise(vec![
        Bitwise::SourceRegister(Register::Reg1),
        Bitwise::DestinationRegister(Register::Reg1),
        Bitwise::Length(len),
        Bitwise::Mask(DataAttribute::Value(mask)),
        Bitwise::Xor(DataAttribute::Value(xor)),
    ])
    .into()
}

fn verdict(code: u32) -> Expr {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
            Verdict::Other(code),
        )])),
    ])
    .into()
}

fn other(name: &str, attributes: Vec<DefaultNla>) -> Expr {
    Expressions::Other {
        expression_type: name.to_owned(),
        attributes,
    }
    .into()
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Any => 0,
    }
}

/// A network's first address and the address after its last (`None` past the top).
fn bounds(net: &IpNet) -> (Vec<u8>, Option<Vec<u8>>) {
    match net {
        IpNet::V4(n) => (
            n.network().octets().to_vec(),
            u32::from(n.broadcast())
                .checked_add(1)
                .map(|e| e.to_be_bytes().to_vec()),
        ),
        IpNet::V6(n) => (
            n.network().octets().to_vec(),
            u128::from(n.broadcast())
                .checked_add(1)
                .map(|e| e.to_be_bytes().to_vec()),
        ),
    }
}

/// Interval keys with touching neighbours joined (two adjacent prefixes are one interval).
fn join(mut keys: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    keys.sort();
    let mut out: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(keys.len());
    for (start, end) in keys {
        match out.last_mut() {
            Some((_, last_end)) if last_end.as_deref() == Some(start.as_slice()) => *last_end = end,
            _ => out.push((start, end)),
        }
    }
    out
}

/// Expressions matching the destination of `a` (after its family check).
fn destination(b: &mut Builder, a: &Accept, rule: usize) -> Vec<Expr> {
    let (offset, full, key_type) = if a.v6 {
        (24, 16, TYPE_IP6ADDR)
    } else {
        (16, 4, TYPE_IPADDR)
    };
    match a.nets.as_slice() {
        [one] if one.prefix_len() == 0 => Vec::new(),
        [one] if one.prefix_len() == one.max_prefix_len() => {
            vec![
                load(NETWORK_HEADER, offset, full),
                cmp(Operator::Equal, bounds(one).0),
            ]
        }
        [one] if one.prefix_len() % 8 == 0 => {
            let bytes = u32::from(one.prefix_len() / 8);
            let mut net = bounds(one).0;
            net.truncate(bytes as usize);
            vec![
                load(NETWORK_HEADER, offset, bytes),
                cmp(Operator::Equal, net),
            ]
        }
        [one] => {
            let mask = match one {
                IpNet::V4(n) => n.netmask().octets().to_vec(),
                IpNet::V6(n) => n.netmask().octets().to_vec(),
            };
            vec![
                load(NETWORK_HEADER, offset, full),
                bitwise(mask),
                cmp(Operator::Equal, bounds(one).0),
            ]
        }
        many => {
            let interval = many.iter().any(|n| n.prefix_len() != n.max_prefix_len());
            let keys: Vec<_> = many.iter().map(bounds).collect();
            let keys = if interval { join(keys) } else { keys };
            vec![
                load(NETWORK_HEADER, offset, full),
                b.set(key_type, full, &keys, interval, rule),
            ]
        }
    }
}

fn accept(b: &mut Builder, a: &Accept, rule: usize) -> Vec<Expr> {
    let family = if a.v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 };
    let mut e = vec![meta(MetaKey::Nfproto), cmp(Operator::Equal, vec![family])];
    e.extend(destination(b, a, rule));
    match a.protocols() {
        [] => {}
        [one] => e.extend([
            meta(MetaKey::L4Proto),
            cmp(Operator::Equal, vec![proto_number(*one)]),
        ]),
        several => {
            let keys: Vec<_> = several
                .iter()
                .map(|p| (vec![proto_number(*p)], None))
                .collect();
            e.push(meta(MetaKey::L4Proto));
            e.push(b.set(TYPE_INET_PROTOCOL, 1, &keys, false, rule));
        }
    }
    match a.ports.as_slice() {
        [] => {}
        [(lo, hi)] if lo == hi => {
            e.extend([
                load(TRANSPORT_HEADER, 2, 2),
                cmp(Operator::Equal, lo.to_be_bytes().to_vec()),
            ]);
        }
        [(lo, hi)] => e.extend([
            load(TRANSPORT_HEADER, 2, 2),
            cmp(Operator::GreatherThanEqual, lo.to_be_bytes().to_vec()),
            cmp(Operator::LessThanEqual, hi.to_be_bytes().to_vec()),
        ]),
        ranges => {
            let interval = ranges.iter().any(|(lo, hi)| lo != hi);
            let keys: Vec<_> = ranges
                .iter()
                .map(|&(lo, hi)| {
                    (
                        lo.to_be_bytes().to_vec(),
                        hi.checked_add(1).map(|e| e.to_be_bytes().to_vec()),
                    )
                })
                .collect();
            e.push(load(TRANSPORT_HEADER, 2, 2));
            e.push(b.set(TYPE_INET_SERVICE, 2, &keys, interval, rule));
        }
    }
    e.push(verdict(NF_ACCEPT));
    e
}

/// The batch that installs `program`: add the table (kept if it exists), flush its rules, add or
/// update the chain, then every rule with the anonymous sets it uses.
pub fn batch(program: &Program) -> Batch {
    let mut b = Builder {
        bytes: Vec::with_capacity(4096),
        acks: Vec::new(),
        next_set: 0,
    };
    b.push(
        0,
        NLM_F_REQUEST,
        NetfilterProtoFamily::Unspec,
        NfOrControl::Control(ControlMessage::BatchBegin),
    );
    b.object(
        NLM_F_CREATE,
        NfTablesMessage::NewTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.to_owned())],
        }),
        format!("table inet {TABLE}"),
    );
    // All rules of the table (a retried create replaces them in the same transaction).
    b.object(
        0,
        NfTablesMessage::DeleteRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(TABLE.to_owned())],
        }),
        format!("flush of table inet {TABLE}"),
    );
    b.object(
        NLM_F_CREATE,
        NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE.to_owned()),
                ChainAttribute::Name(CHAIN.to_owned()),
                ChainAttribute::Hook(vec![
                    Hook::Number(InetHookNumber::LocalOut.into()),
                    Hook::Priority(0),
                ]),
                ChainAttribute::Policy(if program.enforce { NF_DROP } else { NF_ACCEPT }),
                ChainAttribute::Type("filter".to_owned()),
            ],
        }),
        format!("chain {CHAIN}"),
    );
    let mut n = 0usize;
    let mut next = || {
        n += 1;
        n
    };
    let mut lo = b"lo".to_vec();
    lo.resize(IFNAMSIZ, 0);
    b.rule(
        vec![
            meta(MetaKey::Oifname),
            cmp(Operator::Equal, lo),
            verdict(NF_ACCEPT),
        ],
        next(),
    );
    b.rule(
        vec![
            other(
                "ct",
                vec![
                    DefaultNla::new(NFTA_CT_DREG, 1u32.to_be_bytes().to_vec()),
                    DefaultNla::new(NFTA_CT_KEY, NFT_CT_STATE.to_be_bytes().to_vec()),
                ],
            ),
            // ct state is a host-order word.
            bitwise((CT_ESTABLISHED | CT_RELATED).to_ne_bytes().to_vec()),
            cmp(Operator::NotEqual, vec![0; 4]),
            verdict(NF_ACCEPT),
        ],
        next(),
    );
    let log = |prefix: &str| {
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        vec![
            other("counter", Vec::new()),
            other(
                "log",
                vec![
                    DefaultNla::new(NFTA_LOG_PREFIX, p),
                    DefaultNla::new(NFTA_LOG_GROUP, program.nflog_group.to_be_bytes().to_vec()),
                ],
            ),
        ]
    };
    let rule = next();
    let nd: Vec<_> = ND_TYPES.iter().map(|t| (vec![*t], None)).collect();
    let nd_set = b.set(TYPE_ICMP6_TYPE, 1, &nd, false, rule);
    b.rule(
        vec![
            meta(MetaKey::Nfproto),
            cmp(Operator::Equal, vec![NFPROTO_IPV6]),
            meta(MetaKey::L4Proto),
            cmp(Operator::Equal, vec![58]),
            load(TRANSPORT_HEADER, 0, 1),
            nd_set,
            verdict(NF_ACCEPT),
        ],
        rule,
    );
    if program.observe {
        let mut exprs = vec![
            other(
                "ct",
                vec![
                    DefaultNla::new(NFTA_CT_DREG, 1u32.to_be_bytes().to_vec()),
                    DefaultNla::new(NFTA_CT_KEY, NFT_CT_STATE.to_be_bytes().to_vec()),
                ],
            ),
            bitwise(CT_NEW.to_ne_bytes().to_vec()),
            cmp(Operator::NotEqual, vec![0; 4]),
        ];
        exprs.extend(log(OBSERVE_PREFIX));
        b.rule(exprs, next());
    }
    for a in &program.accepts {
        let rule = next();
        let exprs = accept(&mut b, a, rule);
        b.rule(exprs, rule);
    }
    if program.restricts {
        b.rule(log(LOG_PREFIX), next());
    }
    let reject = |kind: u32, code: u8| {
        other(
            "reject",
            vec![
                DefaultNla::new(NFTA_REJECT_TYPE, kind.to_be_bytes().to_vec()),
                DefaultNla::new(NFTA_REJECT_ICMP_CODE, vec![code]),
            ],
        )
    };
    match (program.enforce, program.on_deny) {
        (false, _) => {}
        (true, DenyVerdict::Reject) => {
            b.rule(
                vec![
                    meta(MetaKey::L4Proto),
                    cmp(Operator::Equal, vec![proto_number(Protocol::Tcp)]),
                    reject(NFT_REJECT_TCP_RST, 0),
                ],
                next(),
            );
            b.rule(
                vec![reject(
                    NFT_REJECT_ICMPX_UNREACH,
                    NFT_REJECT_ICMPX_ADMIN_PROHIBITED,
                )],
                next(),
            );
        }
        (true, DenyVerdict::Drop) => b.rule(vec![verdict(NF_DROP)], next()),
    }
    let end = u32::try_from(b.acks.len() + 1).unwrap_or(u32::MAX);
    b.push(
        end,
        NLM_F_REQUEST,
        NetfilterProtoFamily::Unspec,
        NfOrControl::Control(ControlMessage::BatchEnd),
    );
    Batch {
        bytes: b.bytes,
        acks: b.acks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkBuffer;

    fn program(accepts: Vec<Accept>) -> Program {
        Program {
            enforce: true,
            on_deny: DenyVerdict::Reject,
            nflog_group: 100,
            accepts,
            observe: false,
            restricts: true,
        }
    }

    #[test]
    fn observe_only_logs_new_connections_and_refuses_nothing() {
        let p = super::super::observe_only(100);
        let b = batch(&p);
        let m = messages(&b);
        // begin, table, flush, chain, 3 fixed rules + observe rule, nd set + elements, end
        assert_eq!(m.len(), 2 + 3 + 4 + 2, "{:?}", b.acks);
        let text = p.text();
        assert!(text.contains("policy accept;"));
        assert!(text.contains("ct state new counter log prefix \"ociguard-new \" group 100"));
        assert!(!text.contains(LOG_PREFIX));
        assert_eq!(p.rules(), 4);
        let json = super::super::nft_json(&p);
        assert!(
            json.contains(OBSERVE_PREFIX) && !json.contains(LOG_PREFIX),
            "{json}"
        );
    }

    fn accept(nets: &[&str], protocol: Protocol, ports: Vec<(u16, u16)>) -> Accept {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        Accept {
            v6: matches!(nets[0], IpNet::V6(_)),
            nets,
            protocol,
            ports,
            dns: false,
        }
    }

    /// (type, flags, seq, length) of every message in the batch.
    fn messages(b: &Batch) -> Vec<(u16, u16, u32, usize)> {
        let mut out = Vec::new();
        let mut rest = b.bytes.as_slice();
        while !rest.is_empty() {
            let m = NetlinkBuffer::new_checked(rest).unwrap();
            let len = m.length() as usize;
            out.push((m.message_type(), m.flags(), m.sequence_number(), len));
            rest = &rest[(len + 3) & !3..];
        }
        out
    }

    #[test]
    fn one_transaction_every_object_acknowledged() {
        let p = program(vec![
            accept(&["198.18.1.1/32"], Protocol::Tcp, vec![(443, 443)]),
            accept(
                &["198.18.2.0/24", "198.18.9.9/32"],
                Protocol::Any,
                vec![(53, 53), (8000, 8080)],
            ),
        ]);
        let b = batch(&p);
        let m = messages(&b);
        // begin, table, flush, chain, nd set + elements, 3 fixed rules, accept 1 (no set),
        // accept 2 (address set, protocol set, port set, each + elements), log, 2 rejects, end
        assert_eq!(m.len(), 2 + 3 + 2 + 3 + 1 + 6 + 1 + 1 + 2);
        assert_eq!(m.first().unwrap().0, 0x10, "batch begin");
        assert_eq!(m.last().unwrap().0, 0x11, "batch end");
        let inner = &m[1..m.len() - 1];
        assert_eq!(inner.len(), b.acks.len());
        for (i, (kind, flags, seq, _)) in inner.iter().enumerate() {
            assert_eq!(*seq as usize, i + 1);
            assert_eq!(kind >> 8, SUBSYS_NFTABLES, "nf_tables message");
            assert!(flags & NLM_F_ACK != 0, "every object is acknowledged");
        }
        assert_eq!(b.what(1), Some("table inet ociguard"));
        assert_eq!(b.what(2), Some("flush of table inet ociguard"));
        assert_eq!(b.what(3), Some("chain output"));
        assert_eq!(b.what(4), Some("rule 1"));
        assert_eq!(b.what(6), Some("set 1 of rule 3"));
        assert_eq!(b.what(0), None);
        assert_eq!(b.what(999), None);
        assert!(b.acks.iter().any(|a| a == "set 2 of rule 5"));
        assert_eq!(
            b.acks.iter().filter(|a| a.starts_with("rule ")).count(),
            p.rules()
        );
        // Deterministic: the same program is the same bytes.
        assert_eq!(batch(&p), b);
    }

    #[test]
    fn large_sets_are_split_under_the_attribute_limit() {
        let nets: Vec<String> = (0..3000u32)
            .map(|i| format!("fd00::{:x}:0/120", i * 2))
            .collect();
        let refs: Vec<&str> = nets.iter().map(String::as_str).collect();
        let b = batch(&program(vec![accept(&refs, Protocol::Any, Vec::new())]));
        let elements: Vec<&String> = b
            .acks
            .iter()
            .filter(|a| a.contains("elements of set 2"))
            .collect();
        // 3000 disjoint intervals: a start and an end each, plus the leading end.
        let total: usize = elements
            .iter()
            .map(|a| a.split(' ').next().unwrap().parse::<usize>().unwrap())
            .sum();
        assert_eq!(total, 6001);
        assert_eq!(elements.len(), 6001usize.div_ceil(ELEMENTS_PER_MESSAGE));
        for (_, _, _, len) in messages(&b) {
            assert!(len < 65_536, "{len}");
        }
    }

    #[test]
    fn intervals_join_touching_networks() {
        let keys = join(vec![
            bounds(&"10.0.1.0/24".parse().unwrap()),
            bounds(&"10.0.0.0/24".parse().unwrap()),
            bounds(&"10.0.3.0/24".parse().unwrap()),
        ]);
        assert_eq!(
            keys,
            vec![
                (vec![10, 0, 0, 0], Some(vec![10, 0, 2, 0])),
                (vec![10, 0, 3, 0], Some(vec![10, 0, 4, 0])),
            ]
        );
        // the top of the address space has no end boundary
        assert_eq!(bounds(&"255.255.255.0/24".parse().unwrap()).1, None);
    }
}

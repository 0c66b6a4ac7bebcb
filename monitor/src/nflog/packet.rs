//! What the kernel sends: NFLOG packet messages, and the IP + L4 headers they carry.
//!
//! Pure parsing of bytes a socket received, never trusting them: a malformed message is
//! counted and skipped, never a panic (fuzzed by the `nflog` target).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{PacketNla, ULogMessage};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};
use ociguard_policy::egress::{LOG_PREFIX, OBSERVE_PREFIX};
const NLMSG_HDRLEN: usize = 16;
/// `nlmsg_type` of an NFLOG packet: `NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET`.
const NFLOG_PACKET: u16 = (libc::NFNL_SUBSYS_ULOG as u16) << 8 | libc::NFULNL_MSG_PACKET as u16;
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;

/// One denied packet, as far as its first [`COPY_RANGE`](super::COPY_RANGE) bytes tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub dst: IpAddr,
    /// IP protocol number (after IPv6 extension headers).
    pub protocol: u8,
    /// TCP/UDP/SCTP/UDP-Lite destination port, when the header was there (not for a later
    /// fragment, nor a truncated copy).
    pub port: Option<u16>,
    /// ICMP/ICMPv6 type and code.
    pub icmp: Option<(u8, u8)>,
    /// The sending socket's file owner (fsuid), as the host sees it, when the packet had one.
    pub uid: Option<u32>,
}

fn protocol_name(p: u8) -> Option<&'static str> {
    Some(match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        _ => return None,
    })
}

impl fmt::Display for Denial {
    /// `tcp 198.18.1.2:4444 uid 0`, `udp [2001:db8::1]:53`, `icmp 198.18.1.2 type 8 code 0`,
    /// `proto 47 198.18.1.2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match protocol_name(self.protocol) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "proto {}", self.protocol)?,
        }
        match (self.port, self.dst) {
            (Some(p), IpAddr::V4(a)) => write!(f, " {a}:{p}")?,
            (Some(p), IpAddr::V6(a)) => write!(f, " [{a}]:{p}")?,
            (None, a) => write!(f, " {a}")?,
        }
        if let Some((t, c)) = self.icmp {
            write!(f, " type {t} code {c}")?;
        }
        if let Some(uid) = self.uid {
            write!(f, " uid {uid}")?;
        }
        Ok(())
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The destination and transport of an IPv4 or IPv6 packet (its version nibble decides).
/// `None` when not even the IP header is there.
pub fn decode_ip(p: &[u8]) -> Option<Denial> {
    let (dst, protocol, l4) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            if ihl < 20 {
                return None;
            }
            // A fragment other than the first carries no transport header.
            let first_fragment = be16(p, 6)? & 0x1fff == 0;
            let l4 = if first_fragment { p.get(ihl..) } else { None };
            (IpAddr::V4(Ipv4Addr::from(dst)), *p.get(9)?, l4)
        }
        6 => {
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            let mut next = *p.get(6)?;
            let mut at = 40;
            let mut l4 = None;
            // Skip extension headers (bounded: a copy of 128 bytes holds few of them).
            for _ in 0..8 {
                match next {
                    // hop-by-hop, routing, destination options: length in 8-octet units
                    0 | 43 | 60 => {
                        next = *p.get(at)?;
                        at += (usize::from(*p.get(at + 1)?) + 1) * 8;
                    }
                    // fragment: fixed 8 bytes; only the first fragment has the L4 header
                    44 => {
                        let offset = be16(p, at + 2)? >> 3;
                        next = *p.get(at)?;
                        at += 8;
                        if offset != 0 {
                            break;
                        }
                    }
                    // authentication header: length in 4-octet units, minus 2
                    51 => {
                        next = *p.get(at)?;
                        at += (usize::from(*p.get(at + 1)?) + 2) * 4;
                    }
                    _ => {
                        l4 = p.get(at..);
                        break;
                    }
                }
            }
            (IpAddr::V6(Ipv6Addr::from(dst)), next, l4)
        }
        _ => return None,
    };
    let l4 = l4.unwrap_or_default();
    let (port, icmp) = match protocol {
        6 | 17 | 132 | 136 => (be16(l4, 2), None),
        1 | 58 => (
            None,
            l4.get(0..2).and_then(|b| Some((*b.first()?, *b.get(1)?))),
        ),
        _ => (None, None),
    };
    Some(Denial {
        dst,
        protocol,
        port,
        icmp,
        uid: None,
    })
}

/// What one datagram from an NFLOG socket held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Packets logged with [`LOG_PREFIX`].
    pub denials: Vec<Denial>,
    /// First packets of new connections, logged with [`OBSERVE_PREFIX`] (for profiles).
    pub observed: Vec<Denial>,
    /// Packets some other rule logged to the same group (ignored).
    pub foreign: usize,
    /// Messages that could not be decoded (skipped).
    pub malformed: usize,
    /// `NLMSG_ERROR` answers: 0 is an acknowledgement, else a negative errno.
    pub answers: Vec<i32>,
}

/// Decode every netlink message in `buf`; never panics, whatever the bytes.
pub fn parse_datagram(buf: &[u8]) -> Datagram {
    let mut d = Datagram::default();
    let mut at = 0;
    while at < buf.len() {
        let Some(len) = buf
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
        else {
            d.malformed += 1;
            break;
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - at {
            d.malformed += 1;
            break;
        }
        // Only NFLOG packets and netlink answers are ours to decode. netlink-packet-netfilter
        // also parses other subsystems' messages (nftables), and panics on some malformed ones
        // (an attribute shorter than its header); a socket bound to an NFLOG group carries
        // none, so they are skipped unparsed.
        let kind = buf
            .get(at + 4..at + 6)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_ne_bytes);
        if !matches!(kind, Some(NFLOG_PACKET | NLMSG_ERROR)) {
            at = at.saturating_add((len + 3) & !3);
            continue;
        }
        match NetlinkMessage::<NetfilterMessage>::deserialize(&buf[at..at + len]) {
            Ok(msg) => classify(msg.payload, &mut d),
            Err(e) => {
                log::debug!("nflog: undecodable message: {e}");
                d.malformed += 1;
            }
        }
        // NLMSG_ALIGN
        at = at.saturating_add((len + 3) & !3);
    }
    d
}

fn classify(payload: NetlinkPayload<NetfilterMessage>, d: &mut Datagram) {
    match payload {
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
            ..
        }) => packet(&nlas, d),
        NetlinkPayload::Error(e) => d.answers.push(e.raw_code()),
        _ => {}
    }
}

fn packet(nlas: &[PacketNla], d: &mut Datagram) {
    let mut ours = None;
    let mut payload = None;
    let mut uid = None;
    for nla in nlas {
        match nla {
            PacketNla::Prefix(p) => {
                let p = p.to_bytes();
                ours = if p == LOG_PREFIX.as_bytes() {
                    Some(false)
                } else if p == OBSERVE_PREFIX.as_bytes() {
                    Some(true)
                } else {
                    None
                };
            }
            PacketNla::Payload(p) => payload = Some(p.as_slice()),
            PacketNla::Uid(u) => uid = Some(*u),
            _ => {}
        }
    }
    let Some(observed) = ours else {
        d.foreign += 1;
        return;
    };
    match payload.and_then(decode_ip) {
        Some(p) if observed => d.observed.push(Denial { uid, ..p }),
        Some(denial) => d.denials.push(Denial { uid, ..denial }),
        None => d.malformed += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- building NFLOG datagrams as the kernel writes them ----

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// One `NFULNL_MSG_PACKET` message (nlmsghdr + nfgenmsg + attributes).
    fn nflog_message(family: u8, prefix: &str, uid: Option<u32>, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![family, 0];
        body.extend_from_slice(&100u16.to_be_bytes()); // res_id: the group
        let hw = if family == 10 { 0x86ddu16 } else { 0x0800 };
        let mut hdr = hw.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[3, 0]); // hook NF_INET_LOCAL_OUT, pad
        body.extend(nla(libc::NFULA_PACKET_HDR as u16, &hdr));
        body.extend(nla(libc::NFULA_MARK as u16, &0u32.to_be_bytes()));
        body.extend(nla(libc::NFULA_IFINDEX_OUTDEV as u16, &2u32.to_be_bytes()));
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        body.extend(nla(libc::NFULA_PREFIX as u16, &p));
        if let Some(u) = uid {
            body.extend(nla(libc::NFULA_UID as u16, &u.to_be_bytes()));
            body.extend(nla(libc::NFULA_GID as u16, &u.to_be_bytes()));
        }
        body.extend(nla(libc::NFULA_PAYLOAD as u16, payload));
        let mut m = Vec::new();
        let len = (NLMSG_HDRLEN + body.len()) as u32;
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&((4u16 << 8) | libc::NFULNL_MSG_PACKET as u16).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend(body);
        m
    }

    fn ipv4(proto: u8, dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&[198, 18, 1, 2]);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    fn tcp(sport: u16, dport: u16) -> Vec<u8> {
        let mut t = sport.to_be_bytes().to_vec();
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0; 16]);
        t[12] = 0x50;
        t[13] = 0x02; // SYN
        t
    }

    fn ipv6(next: u8, dst: Ipv6Addr, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(rest);
        p
    }

    /// Found by fuzzing: an nftables message whose nested attribute is shorter than its
    /// header made netlink-packet-netfilter panic (subtract with overflow) in the reader.
    #[test]
    fn other_subsystems_are_skipped_unparsed() {
        let m = include_bytes!("../../../fuzz/regressions/nflog/nftables-short-attribute");
        let d = parse_datagram(m);
        assert!(d.denials.is_empty() && d.observed.is_empty() && d.answers.is_empty());
    }

    #[test]
    fn ipv4_tcp_denial() {
        let m = nflog_message(
            2,
            LOG_PREFIX,
            Some(0),
            &ipv4(6, [198, 18, 1, 2], &tcp(40000, 4444)),
        );
        let d = parse_datagram(&m);
        assert_eq!((d.malformed, d.foreign), (0, 0));
        assert_eq!(d.denials.len(), 1);
        assert_eq!(d.denials[0].to_string(), "tcp 198.18.1.2:4444 uid 0");
    }

    #[test]
    fn batched_messages_and_other_prefixes() {
        let mut dg = nflog_message(
            2,
            LOG_PREFIX,
            Some(1000),
            &ipv4(17, [198, 18, 3, 1], &[0x9c, 0x40, 0x00, 0x35, 0, 8, 0, 0]),
        );
        // an odd-length payload makes the next message start after padding
        dg.extend(nflog_message(
            2,
            "someone-else ",
            None,
            &ipv4(6, [198, 18, 3, 1], &tcp(1, 2)),
        ));
        dg.extend(nflog_message(
            2,
            LOG_PREFIX,
            None,
            &ipv4(1, [198, 18, 3, 1], &[8, 0, 0, 0, 0, 1, 0, 1]),
        ));
        // A new connection an observing ruleset logged: not a denial.
        dg.extend(nflog_message(
            2,
            OBSERVE_PREFIX,
            None,
            &ipv4(6, [198, 18, 3, 2], &tcp(40000, 443)),
        ));
        let d = parse_datagram(&dg);
        assert_eq!(d.observed.len(), 1);
        assert_eq!(d.observed[0].to_string(), "tcp 198.18.3.2:443");
        let texts: Vec<String> = d.denials.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "udp 198.18.3.1:53 uid 1000",
                "icmp 198.18.3.1 type 8 code 0"
            ]
        );
        assert_eq!((d.foreign, d.malformed), (1, 0));
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let m = nflog_message(10, LOG_PREFIX, Some(0), &ipv6(6, dst, &tcp(5, 443)));
        assert_eq!(
            parse_datagram(&m).denials[0].to_string(),
            "tcp [2001:db8::1]:443 uid 0"
        );
        // hop-by-hop options (8 bytes) then UDP
        let mut rest = vec![17, 0, 1, 4, 0, 0, 0, 0];
        rest.extend_from_slice(&[0x9c, 0x40, 0x11, 0x5c, 0, 8, 0, 0]);
        let d = decode_ip(&ipv6(0, dst, &rest)).unwrap();
        assert_eq!(d.to_string(), "udp [2001:db8::1]:4444");
        // ICMPv6 echo request
        let d = decode_ip(&ipv6(58, dst, &[128, 0, 0, 0])).unwrap();
        assert_eq!(d.to_string(), "icmpv6 2001:db8::1 type 128 code 0");
        // a later fragment: no port
        let frag = [6, 0, 0x00, 0x08, 0, 0, 0, 1];
        let d = decode_ip(&ipv6(44, dst, &frag)).unwrap();
        assert_eq!(d.to_string(), "tcp 2001:db8::1");
    }

    #[test]
    fn ipv4_edge_cases() {
        // options: IHL 6
        let mut p = ipv4(6, [198, 18, 1, 2], &[1, 1, 1, 1]);
        p[0] = 0x46;
        p.extend(tcp(1, 8080));
        assert_eq!(decode_ip(&p).unwrap().port, Some(8080));
        // later fragment
        let mut p = ipv4(17, [198, 18, 1, 2], &[0, 0, 0, 53]);
        p[6] = 0x00;
        p[7] = 0x10;
        assert_eq!(decode_ip(&p).unwrap().port, None);
        // truncated transport header: address only
        let p = ipv4(6, [198, 18, 1, 2], &[0x9c]);
        assert_eq!(decode_ip(&p).unwrap().to_string(), "tcp 198.18.1.2");
        // GRE: no ports
        let p = ipv4(47, [198, 18, 1, 2], &[0; 8]);
        assert_eq!(decode_ip(&p).unwrap().to_string(), "proto 47 198.18.1.2");
        // bad IHL, short header, unknown version
        let mut p = ipv4(6, [198, 18, 1, 2], &tcp(1, 2));
        p[0] = 0x42;
        assert!(decode_ip(&p).is_none());
        assert!(decode_ip(&p[..19]).is_none());
        assert!(decode_ip(&[0x50; 40]).is_none());
        assert!(decode_ip(&[]).is_none());
    }

    #[test]
    fn truncated_and_garbage_input_never_panics() {
        let good = nflog_message(
            2,
            LOG_PREFIX,
            Some(0),
            &ipv4(6, [198, 18, 1, 2], &tcp(1, 4444)),
        );
        for cut in 0..good.len() {
            let d = parse_datagram(&good[..cut]);
            assert!(d.denials.is_empty(), "cut at {cut}");
        }
        // every single-byte corruption
        for i in 0..good.len() {
            for b in [0u8, 0xff, 0x7f, 0x01] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = parse_datagram(&bad);
            }
        }
        // pseudo-random bytes (xorshift: deterministic)
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let mut v = Vec::with_capacity(len % 300);
            for _ in 0..len % 300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
            if v.len() >= 4 {
                // make the length field plausible now and then
                let l = (v.len() as u32).to_ne_bytes();
                if len % 2 == 0 {
                    v[..4].copy_from_slice(&l);
                }
            }
            let _ = parse_datagram(&v);
            let _ = decode_ip(&v);
        }
        // a payload attribute holding garbage: counted, not published
        let m = nflog_message(2, LOG_PREFIX, None, &[0x45, 0, 0]);
        let d = parse_datagram(&m);
        assert_eq!((d.denials.len(), d.malformed), (0, 1));
    }

    #[test]
    fn acknowledgements() {
        // NLMSG_ERROR with error 0 (ack) and -EBUSY, each followed by the request header
        let ack = |code: i32| {
            let mut m = Vec::new();
            m.extend_from_slice(&36u32.to_ne_bytes());
            m.extend_from_slice(&2u16.to_ne_bytes());
            m.extend_from_slice(&[0; 10]);
            m.extend_from_slice(&code.to_ne_bytes());
            m.extend_from_slice(&[0; 16]);
            m
        };
        assert_eq!(parse_datagram(&ack(0)).answers, vec![0]);
        assert_eq!(parse_datagram(&ack(-16)).answers, vec![-16]);
    }
}

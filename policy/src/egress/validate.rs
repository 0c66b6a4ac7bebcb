//! Load-time checks of `[egress]` (called by [`crate::load`] for every policy file), and the
//! parsing of allow entries that rendering the ruleset shares.

use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;

use super::{mode_str, MAX_ENTRIES};
use crate::model::{EgressMode, Policy, PortSpec};
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::load::parse_policy;

    fn errors(text: &str) -> Vec<String> {
        match parse_policy(Path::new("p.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

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
}

//! `ociguardctl profile show|list` and `ociguardctl policy generate`: the behaviour profiles
//! ociguardd learned, and the least-privilege policy one of them gives.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use ociguard_monitor::protocol::Request;
use ociguard_policy::generate::{self, span, utc};
use ociguard_policy::profile::{protocol_name, Profile};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// Image name or digest, service account as NAMESPACE/NAME, identity, or profile id.
    select: Option<String>,
    /// The monitor's socket (default: `monitor_socket` of the ociguard config).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The profiles as one JSON array.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// The profile(s) to generate from: image name or digest, NAMESPACE/SERVICEACCOUNT,
    /// identity, or profile id. Several matching profiles are merged into one policy.
    #[arg(long)]
    from: String,
    /// The policy's name (default: learned-<image>).
    #[arg(long)]
    name: Option<String>,
    /// Write the policy here (atomically) instead of to stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// The profiles `select` names, and the files ociguardd set aside.
pub fn fetch(
    socket_path: Option<&Path>,
    select: Option<&str>,
) -> anyhow::Result<(Vec<Profile>, Vec<String>)> {
    let sock = crate::monitor_cmds::socket(socket_path)?;
    let resp = ociguard_monitor::client::request(
        &sock,
        &Request::Profiles {
            select: select.map(str::to_owned),
        },
        TIMEOUT,
    )
    .with_context(|| format!("ask ociguardd at {}", sock.display()))?;
    if !resp.ok {
        bail!(
            "ociguardd: {}",
            resp.error.unwrap_or_else(|| "refused".to_owned())
        );
    }
    Ok((
        resp.profiles.unwrap_or_default(),
        resp.quarantined.unwrap_or_default(),
    ))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A profile for people.
pub fn describe(p: &Profile, now: u64) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let s = &p.subject;
    let _ = writeln!(t, "profile {}", s.id());
    let _ = writeln!(t, "  image      {}", s.image.as_deref().unwrap_or("-"));
    let _ = writeln!(t, "  digest     {}", s.digest.as_deref().unwrap_or("-"));
    let _ = writeln!(t, "  identity   {}", s.identity);
    let _ = writeln!(
        t,
        "  learned    {} container(s) from {} to {} (age {}, last change {} ago) under {}",
        p.containers,
        utc(p.first_seen),
        utc(p.last_seen),
        span(now.saturating_sub(p.first_seen)),
        span(now.saturating_sub(p.last_seen)),
        p.policies.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(t, "  programs ({}):", p.execs.len());
    for (prog, e) in &p.execs {
        let resolved: Vec<&str> = e.resolved.iter().map(String::as_str).collect();
        let _ = writeln!(
            t,
            "    {prog}{}  {} container(s){}",
            if resolved.is_empty() {
                String::new()
            } else {
                format!(" -> {}", resolved.join(", "))
            },
            e.containers,
            if e.not_in_image {
                "  (written after start)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(t, "  secrets ({}):", p.secrets.len());
    for (path, readers) in &p.secrets {
        let _ = writeln!(
            t,
            "    {path}  read by {}",
            readers.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let _ = writeln!(
        t,
        "  egress ({} entr(ies) for {} destination(s) seen{}):",
        p.egress.len(),
        p.destinations_seen,
        match p.summarised_to() {
            Some((v4, v6)) => format!(", summarised to /{v4} and /{v6}"),
            None => String::new(),
        }
    );
    for d in &p.egress {
        let _ = writeln!(
            t,
            "    {} {}{}",
            protocol_name(d.protocol),
            d.net,
            d.port.map(|p| format!(" port {p}")).unwrap_or_default()
        );
    }
    if p.dropped.execs + p.dropped.secrets > 0 {
        let _ = writeln!(
            t,
            "  did not fit: {} program(s), {} secret read(s)",
            p.dropped.execs, p.dropped.secrets
        );
    }
    t
}

pub fn show(args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let (found, quarantined) = fetch(args.socket.as_deref(), args.select.as_deref())?;
    let mut out = std::io::stdout().lock();
    for q in &quarantined {
        eprintln!("ociguardctl: warning: profile file set aside by ociguardd: {q}");
    }
    if args.json {
        serde_json::to_writer_pretty(&mut out, &found)?;
        writeln!(out)?;
    } else {
        let now = now();
        for p in &found {
            write!(out, "{}", describe(p, now))?;
        }
    }
    if found.is_empty() {
        eprintln!(
            "ociguardctl: no profile{}",
            args.select
                .as_deref()
                .map(|s| format!(" matches {s:?}"))
                .unwrap_or_default()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn generate(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let sock = crate::monitor_cmds::socket(args.socket.as_deref())?;
    let (found, _) = fetch(Some(&sock), Some(&args.from))?;
    let node = ociguard_policy::behavior::NodeEnforcers::read(&sock);
    if found.is_empty() {
        bail!(
            "no profile matches {:?} (`ociguardctl profile list` shows what ociguardd learned)",
            args.from
        );
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| generate::default_name(&found[0]));
    let text = generate::policy(
        &found,
        &generate::Options {
            name: &name,
            now: now(),
            enforcers: node.as_ref().map(|n| n.enforcers.as_slice()),
        },
    )?;
    // What is written must load: checked with the loader `ociguard` itself uses.
    let check_path = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("(generated)"));
    if let Err(errors) = ociguard_policy::load::parse_policy(&check_path, &text) {
        let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
        bail!(
            "the generated policy does not load (a bug): {}",
            msgs.join("; ")
        );
    }
    match &args.output {
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
        Some(path) => {
            // Never a half-written policy in the policy directory (read at every create).
            crate::setup::write_atomic(path, text.as_bytes())
                .with_context(|| format!("write {}", path.display()))?;
            eprintln!(
                "ociguardctl: wrote policy {name:?} to {} from {} profile(s)",
                path.display(),
                found.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! The OCI hook ociguard injects. Thin: parse, run the library, report, map to an exit code.
//!
//! - `ociguard-hook EVENT --identity MODE --socket PATH --spool DIR [--log FILE --log-format F]`
//!   registers the container's identity; exit 1 only when the container must not start
//!   (required identity not recorded).
//! - `ociguard-hook egress --ruleset FILE --digest D --nft PATH --mode M [--log ...]` installs
//!   the container's egress rules (createRuntime); exit 1 under enforce when they could not be.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ociguard_hooks::{enginelog, Delivered, HookArgs};
use ociguard_policy::identity::HookEvent;
use ociguard_policy::model::IdentityMode;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    BestEffort,
    Required,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "ociguard-hook",
    version,
    about = "ociguard identity hook (OCI state on stdin)"
)]
struct Args {
    /// createRuntime, poststart or poststop.
    event: String,
    #[arg(long, value_enum, default_value = "best-effort")]
    identity: Mode,
    #[arg(long, default_value = "/run/ociguard/monitor.sock")]
    socket: PathBuf,
    #[arg(long, default_value = "/var/lib/ociguard/spool")]
    spool: PathBuf,
    /// The engine's log file (runc's --log), where errors are also written.
    #[arg(long)]
    log: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Give up on the monitor after this long (per step).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PolicyMode {
    Enforce,
    Audit,
}

#[derive(Parser, Debug)]
#[command(
    name = "ociguard-hook egress",
    version,
    about = "install a container's egress ruleset in its network namespace (OCI state on stdin)"
)]
struct EgressCli {
    /// The ruleset ociguard rendered (nft JSON).
    #[arg(long)]
    ruleset: PathBuf,
    /// Its sha256 digest; any other content is refused.
    #[arg(long)]
    digest: String,
    #[arg(long, default_value = "/usr/sbin/nft")]
    nft: PathBuf,
    /// Under audit a failure is logged and the container starts anyway.
    #[arg(long, value_enum, default_value = "enforce")]
    mode: PolicyMode,
    #[arg(long)]
    log: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// Report to stderr (crun drops it) and to the engine's log (where operators look).
fn say(log: Option<&PathBuf>, format: LogFormat, level: &str, msg: &str) {
    eprintln!("ociguard-hook: {level}: {msg}");
    if let Some(log) = log {
        if let Err(e) = enginelog::append(log, matches!(format, LogFormat::Json), level, msg) {
            eprintln!(
                "ociguard-hook: warning: cannot write {}: {e}",
                log.display()
            );
        }
    }
}

fn egress_main() -> ExitCode {
    // argv[1] is "egress"; clap sees the rest.
    let args = EgressCli::parse_from(
        std::env::args_os()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, a)| a),
    );
    let run = ociguard_hooks::egress::EgressArgs {
        ruleset: args.ruleset.clone(),
        digest: args.digest.clone(),
        nft: args.nft.clone(),
    };
    match ociguard_hooks::egress::run(&run, &mut std::io::stdin().lock()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if args.mode == PolicyMode::Audit => {
            say(
                args.log.as_ref(),
                args.log_format,
                "warning",
                &format!("egress (audit, the container starts): {e}"),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(
                args.log.as_ref(),
                args.log_format,
                "error",
                &format!("egress: {e}; the container was not started"),
            );
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("egress")) {
        return egress_main();
    }
    let args = Args::parse();
    let say = |level: &str, msg: &str| say(args.log.as_ref(), args.log_format, level, msg);
    let Some(event) = HookEvent::parse(&args.event) else {
        say(
            "error",
            &format!(
                "unknown hook event {:?} (expected createRuntime, poststart or poststop)",
                args.event
            ),
        );
        return ExitCode::from(2);
    };
    let hook = HookArgs {
        event,
        identity: match args.identity {
            Mode::BestEffort => IdentityMode::BestEffort,
            Mode::Required => IdentityMode::Required,
        },
        socket: args.socket.clone(),
        spool: args.spool.clone(),
        timeout: args.timeout,
    };
    match ociguard_hooks::run(&hook, &mut std::io::stdin().lock()) {
        Ok(report) => {
            let id = report.id.as_deref().unwrap_or("?");
            for w in &report.warnings {
                eprintln!(
                    "ociguard-hook: warning: {}: container {id}: {w}",
                    event.as_str()
                );
            }
            match &report.delivered {
                Delivered::Recorded { .. } => {}
                Delivered::Spooled { path, because } => say(
                    "warning",
                    &format!(
                        "{}: container {id}: {because}; identity spooled to {} for the monitor to ingest",
                        event.as_str(),
                        path.display()
                    ),
                ),
                Delivered::Lost { because } => say(
                    "error",
                    &format!(
                        "{}: container {id}: identity not recorded (best-effort, the container runs): {because}",
                        event.as_str()
                    ),
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            say("error", &format!("{}: {e}", event.as_str()));
            ExitCode::FAILURE
        }
    }
}

//! `ociguard-hook EVENT --identity MODE --socket PATH --spool DIR [--log FILE --log-format F]`:
//! the OCI hook ociguard injects. Thin: parse, run the library, report, map to an exit code.
//! Exit 1 only when the container must not start (required identity not recorded).

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

fn main() -> ExitCode {
    let args = Args::parse();
    let say = |level: &str, msg: &str| {
        eprintln!("ociguard-hook: {level}: {msg}");
        if let Some(log) = &args.log {
            if let Err(e) =
                enginelog::append(log, matches!(args.log_format, LogFormat::Json), level, msg)
            {
                eprintln!(
                    "ociguard-hook: warning: cannot write {}: {e}",
                    log.display()
                );
            }
        }
    };
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

//! The OCI hook ociguard injects. Thin: parse, run the library, report, map to an exit code.
//!
//! - `ociguard-hook createRuntime|poststart|poststop --identity MODE --socket PATH --spool DIR
//!   [--log FILE --log-format F]` registers the container's identity; exit 1 only when the
//!   container must not start (required identity not recorded).
//! - `ociguard-hook egress --ruleset FILE --digest D [--installer netlink|nft] [--nft PATH] --mode M [--log ...]` installs
//!   the container's egress rules (createRuntime); exit 1 under enforce when they could not be.
//!
//! It starts once per hook of every container, on the container's start path, so it skips
//! Rust's runtime start-up (`no_main`): that start-up reads `/proc/self/maps` line by line to
//! place the main thread's stack guard and maps an alternate signal stack, ~0.1 ms of a hook's
//! ~1.3 ms here, for a stack-overflow message this process does not need. The arguments are
//! taken from `main`'s own `argv` (`std::env::args` is empty without std's start-up on musl;
//! only glibc hands std the arguments through `.init_array`); SIGPIPE is ignored as std would.
//!
//! Every run is bounded by `--deadline` (`alarm(2)`): crun is not asked for a hook timeout
//! (its timed wait can miss the hook's exit under `crun run`, see `ociguard_policy::oci_hooks`).

// The binary has no unit tests (`test = false` in Cargo.toml: a test harness would bring its
// own `main`); the library holds the logic and its tests.
#![no_main]
// Only for the C entry point and the SIGPIPE disposition below.
#![allow(unsafe_code)]

use std::os::raw::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ociguard_hooks::{enginelog, Delivered, HookArgs};
use ociguard_policy::config::Installer;
use ociguard_policy::identity::HookEvent;
use ociguard_policy::model::IdentityMode;
use ociguard_policy::oci_hooks::HOOK_DEADLINE_SECS;

#[derive(Parser, Debug)]
#[command(
    name = "ociguard-hook",
    version,
    about = "ociguard's OCI hooks (OCI state on stdin)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// The engine's log file (runc's --log), where errors are also written.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    /// End this process (SIGALRM) after this many seconds, whatever it is waiting for. The
    /// hook entries carry no OCI `timeout` (see `ociguard_policy::oci_hooks`).
    #[arg(long, global = true, default_value_t = HOOK_DEADLINE_SECS,
          value_parser = clap::value_parser!(u32).range(1..))]
    deadline: u32,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Register the created container with ociguardd.
    #[command(name = "createRuntime")]
    CreateRuntime(Identity),
    /// Mark it running.
    Poststart(Identity),
    /// Mark it exited.
    Poststop(Identity),
    /// Install the container's egress ruleset in its network namespace.
    Egress(Egress),
}

#[derive(Args, Debug)]
struct Identity {
    #[arg(long, value_enum, default_value = "best-effort")]
    identity: Mode,
    #[arg(long, default_value = "/run/ociguard/monitor.sock")]
    socket: PathBuf,
    #[arg(long, default_value = "/var/lib/ociguard/spool")]
    spool: PathBuf,
    /// Give up on the monitor after this long (per step).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args, Debug)]
struct Egress {
    /// The ruleset ociguard rendered.
    #[arg(long)]
    ruleset: PathBuf,
    /// Its sha256 digest; any other content is refused.
    #[arg(long)]
    digest: String,
    /// `netlink` (a batch sent by this hook) or `nft` (`nft -j -f -`).
    #[arg(long, default_value = "netlink")]
    installer: Installer,
    /// For `--installer nft`.
    #[arg(long, default_value = "/usr/sbin/nft")]
    nft: PathBuf,
    /// Under audit a failure is logged and the container starts anyway.
    #[arg(long, value_enum, default_value = "enforce")]
    mode: PolicyMode,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    BestEffort,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PolicyMode {
    Enforce,
    Audit,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// Report to stderr (crun drops it) and to the engine's log (where operators look).
    fn say(&self, level: &str, msg: &str) {
        eprintln!("ociguard-hook: {level}: {msg}");
        if let Some(log) = &self.log {
            let json = matches!(self.log_format, LogFormat::Json);
            // The engine's log is shared with crun: say whose line it is.
            let msg = format!("ociguard-hook: {msg}");
            if let Err(e) = enginelog::append(log, json, level, &msg) {
                eprintln!(
                    "ociguard-hook: warning: cannot write {}: {e}",
                    log.display()
                );
            }
        }
    }
}

#[global_allocator]
static HEAP: ociguard_heap::Heap = ociguard_heap::heap();

/// Exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitCode {
    Success = 0,
    Failure = 1,
}

/// The C entry point (see the module documentation).
#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN is not a handler: no code of ours runs on the signal. Set before any
    // thread exists, as std's start-up does.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    // The deadline's SIGALRM must end the process whatever the runtime left behind: an ignored
    // disposition and a blocked mask both survive execve (crun 1.8 blocks signals around its
    // hooks). SAFETY: SIG_DFL is not a handler either.
    let _ = unsafe { signal(Signal::SIGALRM, SigHandler::SigDfl) };
    let _ = nix::sys::signal::SigSet::from(Signal::SIGALRM).thread_unblock();
    let args = (0..usize::try_from(argc).unwrap_or(0)).map(|i| {
        // SAFETY: the C runtime passes `argc` valid, NUL-terminated strings in `argv`, alive
        // for the whole process.
        let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
        std::ffi::OsStr::from_bytes(arg.to_bytes()).to_owned()
    });
    run(Cli::parse_from(args)) as c_int
}

fn run(cli: Cli) -> ExitCode {
    let _ = nix::unistd::alarm::set(cli.deadline);
    match &cli.cmd {
        Cmd::CreateRuntime(a) => identity(&cli, HookEvent::CreateRuntime, a),
        Cmd::Poststart(a) => identity(&cli, HookEvent::Poststart, a),
        Cmd::Poststop(a) => identity(&cli, HookEvent::Poststop, a),
        Cmd::Egress(a) => egress(&cli, a),
    }
}

fn egress(cli: &Cli, args: &Egress) -> ExitCode {
    let run = ociguard_hooks::egress::EgressArgs {
        ruleset: args.ruleset.clone(),
        digest: args.digest.clone(),
        installer: args.installer,
        nft: args.nft.clone(),
    };
    match ociguard_hooks::egress::run(&run, &mut std::io::stdin().lock()) {
        Ok(_) => ExitCode::Success,
        Err(e) if args.mode == PolicyMode::Audit => {
            cli.say(
                "warning",
                &format!("egress (audit, the container starts): {e}"),
            );
            ExitCode::Success
        }
        Err(e) => {
            cli.say(
                "error",
                &format!("egress: {e}; the container was not started"),
            );
            ExitCode::Failure
        }
    }
}

fn identity(cli: &Cli, event: HookEvent, args: &Identity) -> ExitCode {
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
                Delivered::Spooled { path, because } => cli.say(
                    "warning",
                    &format!(
                        "{}: container {id}: {because}; identity spooled to {} for the monitor to ingest",
                        event.as_str(),
                        path.display()
                    ),
                ),
                Delivered::Lost { because } => cli.say(
                    "error",
                    &format!(
                        "{}: container {id}: identity not recorded (best-effort, the container runs): {because}",
                        event.as_str()
                    ),
                ),
            }
            ExitCode::Success
        }
        Err(e) => {
            cli.say("error", &format!("{}: {e}", event.as_str()));
            ExitCode::Failure
        }
    }
}

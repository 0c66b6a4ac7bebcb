//! `ociguardd`: the node monitor daemon. Thin: flags, logging, signals, then `daemon::run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use ociguard_monitor::daemon::{self, Options};
use ociguard_monitor::logger;
use ociguard_policy::RuntimeConfig;

#[derive(Parser, Debug)]
#[command(
    name = "ociguardd",
    version,
    about = "ociguard node monitor: container identity"
)]
struct Args {
    /// Admin socket (default: `monitor_socket` of the ociguard config).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Also listen on a whoami-only socket meant to be mounted into containers.
    #[arg(long)]
    workload_socket: Option<PathBuf>,
    /// Journal and lock file.
    #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Spool directory (default: `spool_dir` of the ociguard config).
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// A uid besides root that may register, deregister and query (repeatable).
    #[arg(long = "admin-uid")]
    admin_uids: Vec<u32>,
    /// Disconnect a peer that sends nothing for this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Check every record against the process table this often.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    reconcile_interval: Duration,
    /// Read the spool this often.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    spool_interval: Duration,
    /// Keep exited containers this long (they are dropped at the next compaction after).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    retain_exited: Duration,
    /// Compact the journal after this many appended records.
    #[arg(long, default_value_t = 20_000)]
    compact_after: u64,
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Do not subscribe to kernel process-exit events (exit statuses become unknown).
    #[arg(long)]
    no_exit_events: bool,
    /// Do not report packets denied by containers' egress rulesets (NFLOG) as events.
    #[arg(long)]
    no_egress_events: bool,
    /// Do not hold [behavior] rules (no fanotify guard): containers whose policy requires
    /// them are then refused.
    #[arg(long)]
    no_guard: bool,
    /// Do not load the BPF enforcer: the fanotify guard alone holds [behavior] rules (rules
    /// only the BPF enforcer holds, like `environ`, are then refused when required).
    #[arg(long)]
    no_bpf: bool,
    /// bpffs directory of the BPF enforcer's pinned maps and programs; one per ociguardd.
    #[arg(long, default_value = ociguard_monitor::bpf::PIN_ROOT)]
    bpf_pin_dir: PathBuf,
    /// containerd's socket, followed to answer `ociguard create`'s image lookups (default:
    /// `labels.containerd_socket` of the ociguard config).
    #[arg(long)]
    containerd_socket: Option<PathBuf>,
    /// Do not follow containerd (ociguard then asks containerd itself on every create).
    #[arg(long)]
    no_containerd: bool,
    /// NFLOG group of the egress rulesets (default: `egress.nflog_group` of the ociguard
    /// config, 100).
    #[arg(long)]
    nflog_group: Option<u16>,
    /// Append every event as a JSON line to this file (`-`: stdout), for a log shipper.
    #[arg(long, value_name = "PATH|-")]
    events_file: Option<String>,
    /// Also send every event's JSON line to syslog, as an RFC 3164 message to this datagram
    /// socket (without a value: /dev/log).
    #[arg(long, value_name = "SOCKET", num_args = 0..=1, default_missing_value = ociguard_monitor::export_syslog::DEV_LOG)]
    events_syslog: Option<PathBuf>,
    /// The syslog facility of --events-syslog (daemon, user, local0..local7, ...).
    #[arg(long, default_value = "daemon", value_parser = ociguard_monitor::export_syslog::parse_facility)]
    syslog_facility: syslog::Facility,
    /// Serve Prometheus metrics (`GET /metrics`) on HOST:PORT (e.g. 127.0.0.1:9464) or on a
    /// Unix socket (an absolute path); nothing listens without it.
    #[arg(long, value_name = "HOST:PORT|PATH", value_parser = ociguard_monitor::metrics::Address::parse)]
    metrics_address: Option<ociguard_monitor::metrics::Address>,
    /// ociguard's decision log, followed for metrics and `refused` events (default:
    /// `decision_log` of the ociguard config).
    #[arg(long, value_name = "PATH")]
    decision_log: Option<PathBuf>,
    /// Do not follow the decision log.
    #[arg(long, conflicts_with = "decision_log")]
    no_decision_log: bool,
    /// error, warn, info, debug or trace.
    #[arg(long, default_value = "info", value_parser = parse_level)]
    log_level: log::LevelFilter,
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("{s:?}: expected error, warn, info, debug or trace"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    logger::init(args.log_level);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config_path = RuntimeConfig::path_from_env();
    let config = RuntimeConfig::load(&config_path)
        .with_context(|| format!("config {}", config_path.display()))?;
    let mut opts = Options {
        socket: args.socket.unwrap_or(config.monitor_socket),
        workload_socket: args.workload_socket,
        state_dir: args.state_dir,
        spool_dir: args.spool_dir.unwrap_or(config.spool_dir),
        admin_uids: args.admin_uids,
        reconcile_interval: args.reconcile_interval,
        spool_interval: args.spool_interval,
        exit_events: !args.no_exit_events,
        egress_events: !args.no_egress_events,
        guard: !args.no_guard,
        bpf: !args.no_bpf,
        bpf_pin_dir: args.bpf_pin_dir,
        events_file: args
            .events_file
            .as_deref()
            .map(ociguard_monitor::export::Target::parse),
        nflog_group: args.nflog_group.unwrap_or(config.egress.nflog_group),
        metrics_address: args.metrics_address,
        events_syslog: args
            .events_syslog
            .map(|socket| ociguard_monitor::export_syslog::Syslog {
                socket,
                facility: args.syslog_facility,
            }),
        decision_log: (!args.no_decision_log)
            .then(|| args.decision_log.unwrap_or(config.decision_log)),
        containerd_socket: (!args.no_containerd).then(|| {
            args.containerd_socket
                .unwrap_or(config.labels.containerd_socket)
        }),
        ..Options::default()
    };
    opts.limits.idle_timeout = args.idle_timeout;
    opts.limits.max_connections = args.max_connections;
    opts.writer.retain_exited = args.retain_exited;
    opts.writer.compact_after = args.compact_after;

    // Block the stop signals in every thread (threads inherit the mask) and take them in one.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("block signals")?;
    let (stop, stopped) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("ociguardd-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                log::info!("{sig}: shutting down");
            }
            let _ = stop.send(());
        })
        .context("start signal thread")?;
    daemon::run(&opts, &stopped).context("ociguardd")?;
    Ok(())
}

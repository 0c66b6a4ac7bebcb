//! The `ociguard` runtime: parse a runc command line, apply policy to `create`/`run`/`restore`
//! and `exec`, and say which runtime to exec with which arguments.
//!
//! It owns the process boundary's *decisions*, never the exec itself (see [`delegate`]): `main`
//! performs the [`Outcome`]. It must never write to stdout except a command's defined output.

pub mod apparmor;
pub mod argv;
pub mod atomic;
pub mod behavior;
#[cfg(feature = "builtin")]
pub mod builtin;
pub mod bundle;
pub mod container_state;
pub mod create;
pub mod decision_log;
pub mod delegate;
pub mod egress;
pub mod exec;
pub mod features;
pub mod identity;
pub mod labels;
pub mod logging;
pub mod runtime_state;
pub mod seccomp_cache;
mod sys;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ociguard_policy::config::{ConfigError, Runtime};
use ociguard_policy::RuntimeConfig;

use crate::argv::{ArgvError, Command, LogFormat};
pub use crate::delegate::{Delegate, Execve, Outcome};
use crate::logging::Logger;

/// What every intercepted command needs.
#[derive(Debug)]
pub struct Context<'a> {
    pub config: &'a RuntimeConfig,
    pub runtime: &'a Runtime,
    pub logger: &'a Logger,
    /// The runtime's `--root`, which scopes container ids.
    pub root: Option<&'a Path>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("command line: {0}")]
    Argv(#[from] ArgvError),
    #[error("config {path}: {source}")]
    Config { path: PathBuf, source: ConfigError },
    #[error("{command} {id}: {source}")]
    Create {
        command: &'static str,
        id: String,
        source: Box<create::CreateError>,
    },
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
    #[error(transparent)]
    Features(#[from] features::FeaturesError),
}

/// Run with the process's configuration (`$OCIGUARD_CONFIG` or `/etc/ociguard/config.toml`).
pub fn run(args: &[OsString]) -> (Logger, Result<Outcome, ShimError>) {
    let config_path = RuntimeConfig::path_from_env();
    let self_exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    run_with(args, &config_path, self_exe.as_deref())
}

/// [`run`] with an explicit config path (and our own executable, to refuse delegating to it).
pub fn run_with(
    args: &[OsString],
    config_path: &Path,
    self_exe: Option<&Path>,
) -> (Logger, Result<Outcome, ShimError>) {
    let invocation = match argv::parse(args) {
        Ok(inv) => inv,
        Err(e) => return (fallback_logger(args), Err(e.into())),
    };
    let g = &invocation.global;
    let logger = Logger::new(g.log.clone(), g.log_format, g.debug);
    let result = dispatch(&invocation, args, config_path, self_exe, &logger);
    (logger, result)
}

fn dispatch(
    invocation: &argv::Invocation,
    args: &[OsString],
    config_path: &Path,
    self_exe: Option<&Path>,
    logger: &Logger,
) -> Result<Outcome, ShimError> {
    let config_err = |source| ShimError::Config {
        path: config_path.to_owned(),
        source,
    };
    let config = RuntimeConfig::load(config_path).map_err(config_err)?;
    let runtime = config
        .resolve_runtime(config_path, self_exe, delegate::HAS_BUILTIN)
        .map_err(config_err)?;
    let ctx = Context {
        config: &config,
        runtime: &runtime,
        logger,
        root: invocation.global.root.as_deref(),
    };
    let forward = |args: Vec<OsString>| Outcome::Exec {
        runtime: runtime.clone(),
        args,
    };
    match &invocation.command {
        Command::Create(c) | Command::Run(c) => {
            let name = if matches!(invocation.command, Command::Create(_)) {
                "create"
            } else {
                "run"
            };
            create::intercept(&ctx, name, &c.id, &c.bundle).map_err(|source| {
                ShimError::Create {
                    command: name,
                    id: c.id.clone(),
                    source: Box::new(source),
                }
            })?;
            Ok(forward(args.to_vec()))
        }
        Command::Restore(r) => {
            create::intercept(&ctx, "restore", &r.id, &r.bundle).map_err(|source| {
                ShimError::Create {
                    command: "restore",
                    id: r.id.clone(),
                    source: Box::new(source),
                }
            })?;
            Ok(forward(args.to_vec()))
        }
        Command::Exec(e) => {
            let flag_index = invocation.subcommand_index.map_or(0, |i| i + 1);
            Ok(forward(exec::intercept(&ctx, e, args, flag_index)?))
        }
        Command::Delete(d) => {
            if let Err(e) = container_state::forget(&config.state_dir, ctx.root, &d.id) {
                // The delete itself is the engine's: never held up by our bookkeeping.
                logger.warn(&format!("container {}: remove its record: {e}", d.id));
            }
            Ok(forward(args.to_vec()))
        }
        Command::Features => Ok(Outcome::Print {
            stdout: features::document(features::delegate_features(&runtime), &runtime)?,
        }),
        // No runtime binary to print its own lines after ours: ociguard names the builtin one.
        Command::Version if runtime == Runtime::Builtin => Ok(Outcome::Print {
            stdout: version_lines(true),
        }),
        Command::Version => Ok(Outcome::PrintThenExec {
            stdout: version_lines(false),
            runtime: runtime.clone(),
            args: vec![OsString::from("--version")],
        }),
        _ => Ok(forward(args.to_vec())),
    }
}

/// `--version`: ociguard's line; with the builtin runtime, a second line naming it (a runtime
/// binary prints its own lines after ours).
fn version_lines(builtin: bool) -> Vec<u8> {
    let mut out = format!("ociguard version {}\n", env!("CARGO_PKG_VERSION"));
    if builtin {
        out.push_str(&format!(
            "runtime: builtin (youki libcontainer {BUILTIN_LIBCONTAINER_VERSION})\n"
        ));
    }
    out.into_bytes()
}

/// The libcontainer version the builtin runtime is built with (Cargo.toml's requirement).
const BUILTIN_LIBCONTAINER_VERSION: &str = "0.7";

/// When argv itself is bad we still honour `--log`/`--log-format` if we can find them.
fn fallback_logger(args: &[OsString]) -> Logger {
    let mut log = None;
    let mut format = LogFormat::Text;
    let mut it = args.iter().map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--log=") {
            log = Some(PathBuf::from(v));
        } else if a == "--log" {
            log = it.next().map(|v| PathBuf::from(v.as_ref()));
        } else if a == "--log-format=json" {
            format = LogFormat::Json;
        } else if a == "--log-format" {
            if it.next().as_deref() == Some("json") {
                format = LogFormat::Json;
            }
        } else if !a.starts_with('-') {
            break;
        }
    }
    Logger::new(log, format, false)
}

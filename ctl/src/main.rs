//! `ociguardctl`: the administrator's view of ociguard — check policies, explain decisions.
//! Thin: each subcommand lives in its own module and returns an exit code.

mod apparmor_cmd;
mod explain;
mod monitor_cmds;
mod policy_check;
mod profile_cmd;
mod setup;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "ociguardctl", version, about = "ociguard administration")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Policy files.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Dry run of `create` on a bundle: facts, policies considered, the chosen one, the diff.
    Explain(explain::Args),
    /// Generated AppArmor profiles.
    #[command(subcommand)]
    Apparmor(AppArmorCmd),
    /// Register ociguard as a runtime of containerd, Podman, Docker or CRI-O (merges into the
    /// engine's config; idempotent; --dry-run prints the diff).
    Setup(setup::Args),
    /// Behaviour profiles ociguardd learned under `learn` policies.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Container identity, from ociguardd.
    #[command(flatten)]
    Monitor(monitor_cmds::Cmd),
}

#[derive(Subcommand, Debug)]
enum AppArmorCmd {
    /// Write the profile a policy generates for a bundle, for review (nothing is loaded).
    Render(apparmor_cmd::RenderArgs),
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Validate every policy file in a directory, and that the config and the policies may be
    /// trusted (exit 0 if all are valid, 1 otherwise).
    Check(policy_check::Args),
    /// Write a least-privilege policy from learned behaviour profiles.
    Generate(profile_cmd::GenerateArgs),
}

#[derive(Subcommand, Debug)]
enum ProfileCmd {
    /// One or more profiles, for people (or --json).
    Show(profile_cmd::ShowArgs),
    /// Every profile (`show` without a selector).
    List(profile_cmd::ShowArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Policy(PolicyCmd::Check(args)) => policy_check::run(&args),
        Cmd::Policy(PolicyCmd::Generate(args)) => profile_cmd::generate(&args),
        Cmd::Profile(ProfileCmd::Show(args) | ProfileCmd::List(args)) => profile_cmd::show(&args),
        Cmd::Explain(args) => explain::run(&args),
        Cmd::Setup(args) => setup::run(&args),
        Cmd::Apparmor(AppArmorCmd::Render(args)) => apparmor_cmd::render(&args),
        Cmd::Monitor(cmd) => monitor_cmds::run(&cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ociguardctl: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

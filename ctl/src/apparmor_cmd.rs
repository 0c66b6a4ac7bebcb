//! `ociguardctl apparmor render POLICY BUNDLE [-o FILE]`: the AppArmor profile a policy generates
//! for a bundle, for review before it is enabled. Nothing is compiled or loaded, so it works on
//! hosts without AppArmor; `ociguardctl explain` shows the same text for the policy `create`
//! would choose.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use ociguard_policy::load::{parse_policy, LoadErrors};
use ociguard_policy::model::AppArmorMode;
use ociguard_policy::trust::Trust;
use ociguard_policy::{apparmor, spec, LoadedPolicy, PolicySet, RuntimeConfig};
use ociguard_shim::bundle;

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// A policy file (a path, or ending in `.toml`) or the name of a policy in the configured
    /// policy directory.
    policy: String,
    /// The bundle directory (containing config.json).
    bundle: PathBuf,
    /// Write the profile to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn render(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let policy = load_policy(&args.policy)?;
    let config_path = bundle::config_path(&args.bundle);
    let file = bundle::read(&config_path)?;
    let doc = spec::parse_config(&file.bytes, &config_path)?;
    let profile = apparmor::render(&policy, &doc, policy.policy.egress.restricts())
        .with_context(|| format!("render AppArmor profile of policy {:?}", policy.name()))?;
    if policy.policy.apparmor.mode == AppArmorMode::Off {
        eprintln!(
            "ociguardctl: note: policy {:?} has [apparmor] mode = \"off\"; create does not apply this profile",
            policy.name()
        );
    }
    match &args.output {
        Some(path) => {
            std::fs::write(path, &profile.text)
                .with_context(|| format!("write {}", path.display()))?;
            eprintln!(
                "ociguardctl: wrote AppArmor profile {} ({}) to {}",
                profile.name,
                profile.digest,
                path.display()
            );
        }
        None => std::io::stdout()
            .lock()
            .write_all(profile.text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

fn load_policy(arg: &str) -> anyhow::Result<LoadedPolicy> {
    if arg.contains('/') || arg.ends_with(".toml") {
        let path = Path::new(arg);
        let text = std::fs::read_to_string(path).with_context(|| format!("read policy {arg}"))?;
        return parse_policy(path, &text).map_err(|errors| LoadErrors(errors).into());
    }
    let config = RuntimeConfig::load(&RuntimeConfig::path_from_env())?;
    let set = PolicySet::load_dir(&config.policy_dir, &Trust::new(config.admin_uid))
        .with_context(|| format!("policy directory {}", config.policy_dir.display()))?;
    let found = set.iter().find(|p| p.name() == arg).cloned();
    found.ok_or_else(|| {
        anyhow::anyhow!("no policy named {arg:?} in {}", config.policy_dir.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_policy_file_for_a_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("web.toml");
        std::fs::write(
            &policy,
            "name = \"web\"\n[match]\nimages = [\"x\"]\n[apparmor]\nmode = \"required\"\ndeny_exec = [\"/bin/sh\"]\n",
        )
        .unwrap();
        let bundle = dir.path().join("bundle");
        std::fs::create_dir(&bundle).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},"mounts":[{"destination":"/run/secrets/db","type":"bind","source":"/s"}]}"#,
        )
        .unwrap();
        let output = dir.path().join("out.profile");
        let args = RenderArgs {
            policy: policy.display().to_string(),
            bundle,
            output: Some(output.clone()),
        };
        assert_eq!(render(&args).unwrap(), ExitCode::SUCCESS);
        let text = std::fs::read_to_string(&output).unwrap();
        assert!(text.contains("profile ociguard-web-"), "{text}");
        assert!(
            text.contains("deny \"/run/secrets/db{,/**}\" rwlkmx,"),
            "{text}"
        );
        assert!(text.contains("deny \"/bin/sh\" mx,"), "{text}");

        std::fs::write(
            &policy,
            "name = \"web\"\n[match]\nimages = [\"x\"]\n[apparmor]\ndeny_exec = [\"/bin/{sh\"]\n",
        )
        .unwrap();
        let err = format!("{:#}", render(&args).unwrap_err());
        assert!(err.contains("web.toml:5:14: apparmor.deny_exec"), "{err}");
    }
}

//! `create`, `run` and `restore`: choose the policy, rewrite the bundle, remember the container.
//!
//! Order matters for "fail closed, lose nothing": everything that can fail (reading, validating,
//! loading policies, deciding) happens before the first write; the container record is written
//! before config.json so that no container can start under a policy `exec` does not know about.

use std::path::{Path, PathBuf};

use ociguard_policy::decision::DecideError;
use ociguard_policy::decision::{decide_with, DecideOptions};
use ociguard_policy::load::LoadErrors;
use ociguard_policy::model::LabelRequirement;
use ociguard_policy::trust::Trust;
use ociguard_policy::{Mode, PolicySet};

use crate::bundle::{self, BundleError};
use crate::container_state::{self, ContainerRecord, StateError};
use crate::decision_log::{self, DecisionRecord};
use crate::Context;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("policy directory {dir}: {errors}")]
    Policies { dir: PathBuf, errors: LoadErrors },
    #[error("{0}")]
    Decide(#[from] DecideError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    AppArmor(#[from] crate::apparmor::AppArmorError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Egress(#[from] crate::egress::EgressError),
    #[error(transparent)]
    Behavior(#[from] crate::behavior::BehaviorError),
    #[error("policy {policy:?} requires its decision to be logged (decision_log = \"required\"): {source}")]
    DecisionLog {
        policy: String,
        source: decision_log::DecisionLogError,
    },
    #[error("chosen policy {policy:?} ({digest}) is not in the loaded policy set")]
    PolicyMissing { policy: String, digest: String },
}

/// A stage that cannot be applied under an audit policy leaves the bundle as it is (`None`);
/// under enforce its error refuses the create.
fn audit_tolerant<T, E>(
    ctx: &Context<'_>,
    id: &str,
    mode: Mode,
    result: Result<T, E>,
) -> Result<Option<T>, CreateError>
where
    E: std::fmt::Display + Into<CreateError>,
{
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if !mode.enforces() => {
            ctx.logger.warn(&format!(
                "container {id}: {e}; audit mode: starting unchanged"
            ));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Rewrite the bundle of container `id` for `command` (create/run/restore).
pub fn intercept(
    ctx: &Context<'_>,
    command: &str,
    id: &str,
    bundle_dir: &Path,
) -> Result<(), CreateError> {
    let mut record = DecisionRecord {
        time: DecisionRecord::now(),
        command,
        id,
        bundle: bundle_dir,
        runtime: ctx.runtime,
        result: "refused",
        decision: None,
        error: None,
    };
    let result = rewrite(ctx, id, bundle_dir);
    let outcome = match &result {
        Ok(Some(Applied {
            rewritten, changed, ..
        })) => {
            record.result = if *changed { "applied" } else { "unchanged" };
            record.decision = Some(&rewritten.decision);
            ctx.logger.info(&format!(
                "container {id}: policy {:?} ({}) {}: {}",
                rewritten.decision.policy,
                rewritten.decision.policy_digest,
                rewritten.decision.mode.as_str(),
                rewritten.decision.reason
            ));
            Ok(())
        }
        Ok(None) => {
            record.result = "audit-error";
            Ok(())
        }
        Err(e) => {
            record.error = Some(e.to_string());
            Err(())
        }
    };
    let rotation = decision_log::Rotation::of(ctx.config);
    let logged = decision_log::append(&ctx.config.decision_log, rotation, &record);
    match (outcome, result) {
        (Ok(()), Ok(Some(applied))) if applied.log_required => {
            // The policy makes its audit trail a condition of the container.
            logged.map_err(|e| CreateError::DecisionLog {
                policy: applied.rewritten.decision.policy.clone(),
                source: e,
            })
        }
        (outcome, result) => {
            if let Err(e) = logged {
                // The container's protection does not depend on the log; say so loudly and go on.
                ctx.logger.warn(&e.to_string());
            }
            match (outcome, result) {
                (Err(()), Err(e)) => Err(e),
                _ => Ok(()),
            }
        }
    }
}

/// What `create` would do to a bundle, computed without writing anything.
#[derive(Debug, Clone)]
pub struct Plan {
    pub config_path: PathBuf,
    /// config.json as read, with the metadata of the file read (a rewrite keeps its owner and mode).
    pub original: bundle::BundleFile,
    pub rewritten: ociguard_policy::Rewritten,
    /// The generated AppArmor profile, if the policy asks for one (loaded only on commit).
    pub apparmor: Option<crate::apparmor::AppArmorPlan>,
    /// The egress ruleset the createRuntime hook installs (stored only on commit).
    pub egress: Option<crate::egress::EgressPlan>,
    /// The policy's `decision_log = "required"`.
    pub log_required: bool,
}

/// What a create did to the bundle.
#[derive(Debug)]
struct Applied {
    rewritten: ociguard_policy::Rewritten,
    /// Whether config.json was rewritten (not already what the policy makes it).
    changed: bool,
    log_required: bool,
}

/// Read the bundle, load the policies and decide. Writes nothing: `ociguardctl explain` shows
/// exactly this. `Ok(None)`: an audit policy could not be applied; the bundle stays as it is.
pub fn plan(ctx: &Context<'_>, id: &str, bundle_dir: &Path) -> Result<Option<Plan>, CreateError> {
    let config_path = bundle::config_path(bundle_dir);
    let original = bundle::read(&config_path)?;
    let trust = Trust::new(ctx.config.admin_uid);
    let policies = PolicySet::load_dir(&ctx.config.policy_dir, &trust).map_err(|errors| {
        CreateError::Policies {
            dir: ctx.config.policy_dir.clone(),
            errors,
        }
    })?;
    let options = DecideOptions {
        pinned_digests: &ctx.config.pinned_digests,
    };
    let label_cache = ctx.config.state_dir.join("labels");
    let enrich = |spec: &serde_json::Value, facts: &mut ociguard_policy::select::Facts| {
        crate::labels::enrich(
            bundle_dir,
            spec,
            facts,
            &ctx.config.labels,
            &label_cache,
            Some(&ctx.config.monitor_socket),
        )
    };
    let mut rewritten =
        match decide_with(&original.bytes, &config_path, &policies, &options, enrich) {
            Ok(r) => r,
            Err(e @ DecideError::Rewrite { mode, .. }) if !mode.enforces() => {
                ctx.logger.warn(&format!(
                    "container {id}: {e}; audit mode: starting unchanged"
                ));
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
    // Every stage below applies this one policy: look it up once.
    let d = &rewritten.decision;
    let policy =
        policies
            .get(&d.policy, &d.policy_digest)
            .ok_or_else(|| CreateError::PolicyMissing {
                policy: d.policy.clone(),
                digest: d.policy_digest.clone(),
            })?;
    let mode = policy.policy.mode;
    let apparmor = crate::apparmor::prepare(ctx, policy, &mut rewritten);
    let Some(apparmor) = audit_tolerant(ctx, id, mode, apparmor)? else {
        return Ok(None);
    };
    let egress = crate::egress::prepare(ctx, policy, &mut rewritten);
    let Some(egress) = audit_tolerant(ctx, id, mode, egress)? else {
        return Ok(None);
    };
    crate::behavior::prepare(policy, &ctx.config.monitor_socket, &mut rewritten)?;
    crate::identity::prepare(ctx, policy, &mut rewritten)?;
    Ok(Some(Plan {
        config_path,
        original,
        rewritten,
        apparmor,
        egress,
        log_required: policy.policy.decision_log == LabelRequirement::Required,
    }))
}

fn rewrite(ctx: &Context<'_>, id: &str, bundle_dir: &Path) -> Result<Option<Applied>, CreateError> {
    let Some(plan) = plan(ctx, id, bundle_dir)? else {
        return Ok(None);
    };
    // Required identity and no monitor: refuse before anything is loaded, written or created.
    crate::identity::preflight(ctx, &plan.rewritten.decision)?;
    // Before the first write: config.json may name the profile only once the kernel has it.
    crate::apparmor::commit(ctx, plan.apparmor.as_ref())?;
    crate::egress::commit(plan.egress.as_ref())?;
    let mut rewritten = plan.rewritten;
    // Precompiled filter for crun (cached by profile): kept out of plan(), which must not write.
    crate::seccomp_cache::precompile(ctx, id, &mut rewritten);
    let d = &rewritten.decision;
    let record = ContainerRecord::from_spec(
        id,
        bundle_dir,
        &d.policy,
        &d.policy_digest,
        d.mode,
        &rewritten.document,
    );
    record.save(&container_state::record_path(
        &ctx.config.state_dir,
        ctx.root,
        id,
    ))?;
    // The one serialisation of the create path.
    let bytes = rewritten.to_bytes();
    let changed = bytes != plan.original.bytes;
    if changed {
        bundle::write_atomic(&plan.config_path, &plan.original.meta, &bytes)?;
    }
    Ok(Some(Applied {
        rewritten,
        changed,
        log_required: plan.log_required,
    }))
}

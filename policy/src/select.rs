//! Choosing a policy for a container: facts about the container → the most specific match.
//!
//! Facts come from untrusted places (engine annotations, later image labels); they can only
//! *select* among admin-written policies. Specificity is, in order: the policy's `priority`, the
//! number of conditions in its `[match]`, then how many of those are exact (glob-free). Two
//! matching policies that are equal on all three are ambiguous and the create fails closed.

use std::collections::BTreeMap;

use glob_match::glob_match;
use serde::Serialize;
use serde_json::Value;

use crate::annotations::OWN_PREFIX;
use crate::load::{LoadedPolicy, PolicySet};
use crate::model::Selector;

/// Annotations that carry the image reference, by engine, in order of preference.
pub const IMAGE_ANNOTATIONS: &[&str] = &[
    "io.kubernetes.cri.image-name",      // containerd CRI
    "io.kubernetes.cri-o.ImageName",     // CRI-O
    "org.opencontainers.image.ref.name", // image-spec; set by some tools
];

/// What is known about a container when choosing its policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub image: Option<String>,
    /// Where `image` came from (the annotation key), for the decision record.
    pub image_source: Option<String>,
    /// The bundle's annotations, minus ociguard's own (`org.ociguard.*`).
    pub annotations: BTreeMap<String, String>,
}

impl Facts {
    /// Facts from a `config.json` document.
    pub fn from_spec(spec: &Value) -> Facts {
        let mut facts = Facts::default();
        if let Some(map) = spec.get("annotations").and_then(Value::as_object) {
            for (k, v) in map {
                if let (false, Some(v)) = (k.starts_with(OWN_PREFIX), v.as_str()) {
                    facts.annotations.insert(k.clone(), v.to_owned());
                }
            }
        }
        for key in IMAGE_ANNOTATIONS {
            if let Some(v) = facts.annotations.get(*key).filter(|v| !v.is_empty()) {
                facts.image = Some(v.clone());
                facts.image_source = Some(format!("annotation {key}"));
                break;
            }
        }
        facts
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Specificity {
    pub priority: i32,
    pub conditions: u32,
    pub exact: u32,
}

/// One policy's evaluation, as `ociguardctl explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Considered {
    pub policy: String,
    pub source: String,
    pub matched: bool,
    pub specificity: Specificity,
    /// One line per condition: what was compared and the outcome.
    pub why: Vec<String>,
}

/// The chosen policy and why.
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    pub policy: &'a LoadedPolicy,
    pub reason: String,
    pub considered: Vec<Considered>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("policies {a:?} ({a_source}) and {b:?} ({b_source}) both match with equal specificity; raise one's priority or narrow its [match]")]
    Ambiguous {
        a: String,
        a_source: String,
        b: String,
        b_source: String,
    },
}

fn is_exact(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '[', '{', '\\'])
}

fn evaluate_one(policy: &LoadedPolicy, facts: &Facts) -> Considered {
    let Selector {
        images,
        annotations,
    } = &policy.policy.selector;
    let mut matched = true;
    let mut why = Vec::new();
    let mut spec = Specificity {
        priority: policy.policy.priority,
        conditions: 0,
        exact: 0,
    };
    if !images.is_empty() {
        spec.conditions += 1;
        let hit = facts.image.as_deref().and_then(|image| {
            images
                .iter()
                .find(|g| glob_match(g.get_ref(), image))
                .map(|g| (image, g.get_ref()))
        });
        match (hit, facts.image.as_deref()) {
            (Some((image, g)), _) => {
                if is_exact(g) {
                    spec.exact += 1;
                }
                why.push(format!("image {image:?} matches {g:?}"));
            }
            (None, Some(image)) => {
                matched = false;
                why.push(format!(
                    "image {image:?} matches none of {:?}",
                    globs(images)
                ));
            }
            (None, None) => {
                matched = false;
                why.push("image unknown".to_owned());
            }
        }
    }
    for (key, glob) in annotations {
        spec.conditions += 1;
        match facts.annotations.get(key) {
            Some(v) if glob_match(glob.get_ref(), v) => {
                if is_exact(glob.get_ref()) {
                    spec.exact += 1;
                }
                why.push(format!(
                    "annotation {key}={v:?} matches {:?}",
                    glob.get_ref()
                ));
            }
            Some(v) => {
                matched = false;
                why.push(format!(
                    "annotation {key}={v:?} does not match {:?}",
                    glob.get_ref()
                ));
            }
            None => {
                matched = false;
                why.push(format!("annotation {key} absent"));
            }
        }
    }
    Considered {
        policy: policy.name().to_owned(),
        source: policy.source_display(),
        matched,
        specificity: spec,
        why,
    }
}

fn globs(g: &[toml::Spanned<String>]) -> Vec<&str> {
    g.iter().map(|s| s.get_ref().as_str()).collect()
}

/// Evaluate every policy and choose one.
pub fn select<'a>(set: &'a PolicySet, facts: &Facts) -> Result<Selection<'a>, SelectError> {
    let considered: Vec<Considered> = set
        .policies
        .iter()
        .map(|p| evaluate_one(p, facts))
        .collect();
    let mut best: Option<usize> = None;
    for (i, c) in considered.iter().enumerate().filter(|(_, c)| c.matched) {
        match best {
            Some(b) if considered[b].specificity > c.specificity => {}
            _ => best = Some(i),
        }
    }
    let Some(best) = best else {
        return Ok(Selection {
            policy: &set.default,
            reason: "no policy's [match] selected this container; default applies".to_owned(),
            considered,
        });
    };
    if let Some(tie) = considered
        .iter()
        .enumerate()
        .find(|(i, c)| *i != best && c.matched && c.specificity == considered[best].specificity)
    {
        return Err(SelectError::Ambiguous {
            a: considered[best].policy.clone(),
            a_source: considered[best].source.clone(),
            b: tie.1.policy.clone(),
            b_source: tie.1.source.clone(),
        });
    }
    let reason = considered[best].why.join("; ");
    Ok(Selection {
        policy: &set.policies[best],
        reason,
        considered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn set(files: &[(&str, &str)]) -> PolicySet {
        PolicySet::from_texts(files.iter().map(|(p, t)| (Path::new(*p), *t))).unwrap()
    }

    fn facts(image: Option<&str>, ann: &[(&str, &str)]) -> Facts {
        Facts {
            image: image.map(str::to_owned),
            image_source: None,
            annotations: ann
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn facts_from_spec() {
        let spec = serde_json::json!({"annotations": {
            "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25",
            "org.ociguard.policy": "forged",
            "n": 3
        }});
        let f = Facts::from_spec(&spec);
        assert_eq!(f.image.as_deref(), Some("docker.io/library/nginx:1.25"));
        assert!(!f.annotations.contains_key("org.ociguard.policy"));
        assert!(!f.annotations.contains_key("n"));
        assert_eq!(Facts::from_spec(&serde_json::json!({})), Facts::default());
    }

    #[test]
    fn most_specific_wins_and_default_applies_otherwise() {
        let s = set(&[
            ("/p/any-nginx.toml", "name = \"any-nginx\"\n[match]\nimages = [\"docker.io/library/nginx:*\"]\n"),
            ("/p/nginx-prod.toml", "name = \"nginx-prod\"\n[match]\nimages = [\"docker.io/library/nginx:*\"]\nannotations = { \"io.kubernetes.pod.namespace\" = \"prod\" }\n"),
        ]);
        let f = facts(
            Some("docker.io/library/nginx:1.25"),
            &[("io.kubernetes.pod.namespace", "prod")],
        );
        let sel = select(&s, &f).unwrap();
        assert_eq!(sel.policy.name(), "nginx-prod");
        assert!(sel.reason.contains("matches"), "{}", sel.reason);

        let f = facts(Some("docker.io/library/nginx:1.25"), &[]);
        assert_eq!(select(&s, &f).unwrap().policy.name(), "any-nginx");

        let f = facts(Some("docker.io/library/redis:7"), &[]);
        let sel = select(&s, &f).unwrap();
        assert_eq!(sel.policy.name(), "default");
        assert!(sel.considered.iter().all(|c| !c.matched));
        // `*` does not cross a `/`: a deeper repository is a different image.
        let f = facts(Some("docker.io/library/nginx/evil:1"), &[]);
        assert_eq!(select(&s, &f).unwrap().policy.name(), "default");
    }

    #[test]
    fn exact_beats_glob_and_priority_beats_all() {
        let s = set(&[
            (
                "/p/a.toml",
                "name = \"a\"\n[match]\nimages = [\"reg/app:*\"]\n",
            ),
            (
                "/p/b.toml",
                "name = \"b\"\n[match]\nimages = [\"reg/app:1\"]\n",
            ),
        ]);
        assert_eq!(
            select(&s, &facts(Some("reg/app:1"), &[]))
                .unwrap()
                .policy
                .name(),
            "b"
        );
        let s = set(&[
            (
                "/p/a.toml",
                "name = \"a\"\npriority = 10\n[match]\nimages = [\"reg/app:*\"]\n",
            ),
            (
                "/p/b.toml",
                "name = \"b\"\n[match]\nimages = [\"reg/app:1\"]\nannotations = { x = \"y\" }\n",
            ),
        ]);
        assert_eq!(
            select(&s, &facts(Some("reg/app:1"), &[("x", "y")]))
                .unwrap()
                .policy
                .name(),
            "a"
        );
    }

    #[test]
    fn equal_specificity_is_ambiguous() {
        let s = set(&[
            ("/p/a.toml", "name = \"a\"\n[match]\nimages = [\"reg/*\"]\n"),
            ("/p/b.toml", "name = \"b\"\n[match]\nimages = [\"*/app\"]\n"),
        ]);
        let err = select(&s, &facts(Some("reg/app"), &[])).unwrap_err();
        assert!(err.to_string().contains("/p/a.toml") && err.to_string().contains("/p/b.toml"));
    }

    #[test]
    fn annotation_presence_and_absence() {
        let s = set(&[(
            "/p/a.toml",
            "name = \"a\"\n[match]\nannotations = { \"team\" = \"*\" }\n",
        )]);
        assert_eq!(
            select(&s, &facts(None, &[("team", "x")]))
                .unwrap()
                .policy
                .name(),
            "a"
        );
        let sel = select(&s, &facts(None, &[])).unwrap();
        assert_eq!(sel.policy.name(), "default");
        assert_eq!(
            sel.considered[0].why,
            vec!["annotation team absent".to_owned()]
        );
    }
}

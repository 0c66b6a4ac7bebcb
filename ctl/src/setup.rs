//! `ociguardctl setup ENGINE`: register ociguard as a runtime of containerd, Podman, Docker or
//! CRI-O, the way `nvidia-ctk runtime configure` does for its runtime.
//!
//! - containerd: merged into `config.toml` (comments and layout kept, with `toml_edit`): the
//!   CRI plugin's `runtimes.ociguard` (runc v2 shim, `BinaryName`), and `runtimes.runc` when the
//!   file defines no runc entry, because a `runtimes` table in the file replaces containerd's
//!   built-in one and CRI then refuses to load ("no corresponding runtime configured in
//!   containerd.runtimes for default_runtime_name = \"runc\""). A file without `version` is
//!   made `version = 2`; a version 1 file is refused (`containerd config migrate` first).
//! - Podman: a drop-in of its own, `containers.conf.d/50-ociguard.conf`.
//! - Docker: `daemon.json`'s `runtimes.ociguard` merged in, every other key kept.
//! - CRI-O: a drop-in of its own, `crio.conf.d/50-ociguard.conf`.
//!
//! Idempotent (a second run changes nothing and says so), `--default` also makes ociguard the
//! engine's default runtime, `--dry-run` prints the unified diff and writes nothing. Files are
//! replaced atomically (temp file, fsync, rename) with their mode kept.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use serde_json::Value;
use toml_edit::{value, DocumentMut, Item, Table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Containerd,
    Podman,
    Docker,
    Crio,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    engine: Engine,
    /// The ociguard binary the engine runs.
    #[arg(long, default_value = "/usr/local/bin/ociguard")]
    binary: PathBuf,
    /// The file to edit or write (default: the engine's usual place).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also make ociguard the engine's default runtime.
    #[arg(long)]
    default: bool,
    /// Print what would change, write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The runtime name engines know ociguard by (containerd's CRI handler, `--runtime`).
pub const NAME: &str = "ociguard";

impl Engine {
    fn default_config(self) -> &'static str {
        match self {
            Engine::Containerd => "/etc/containerd/config.toml",
            Engine::Podman => "/etc/containers/containers.conf.d/50-ociguard.conf",
            Engine::Docker => "/etc/docker/daemon.json",
            Engine::Crio => "/etc/crio/crio.conf.d/50-ociguard.conf",
        }
    }

    fn restart(self) -> &'static str {
        match self {
            Engine::Containerd => "systemctl restart containerd; then a RuntimeClass with handler: ociguard (deploy/kubernetes/runtimeclass.yaml)",
            Engine::Podman => "nothing to restart: the next `podman run --runtime ociguard` uses it",
            Engine::Docker => "systemctl reload docker (or restart); then `docker run --runtime ociguard`",
            Engine::Crio => "systemctl restart crio; then a RuntimeClass with handler: ociguard",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{path}: not valid TOML: {source}")]
    Toml {
        path: String,
        source: toml_edit::TomlError,
    },
    #[error("{path}: not valid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: {what}")]
    Shape { path: String, what: String },
}

fn shape(path: &Path, what: impl Into<String>) -> SetupError {
    SetupError::Shape {
        path: path.display().to_string(),
        what: what.into(),
    }
}

/// A sub-table of `t` (created, implicit, when missing); an error when `key` holds a value.
fn table<'a>(t: &'a mut Table, key: &str, path: &Path) -> Result<&'a mut Table, SetupError> {
    if !t.contains_key(key) {
        let mut new = Table::new();
        new.set_implicit(true);
        t.insert(key, Item::Table(new));
    }
    t.get_mut(key)
        .and_then(Item::as_table_mut)
        .ok_or_else(|| shape(path, format!("`{key}` is not a table")))
}

/// containerd's `config.toml` with ociguard registered (see the module doc).
pub fn containerd(
    old: &str,
    binary: &Path,
    default: bool,
    path: &Path,
) -> Result<String, SetupError> {
    let mut doc: DocumentMut = old.parse().map_err(|source| SetupError::Toml {
        path: path.display().to_string(),
        source,
    })?;
    match doc.get("version").and_then(Item::as_integer) {
        Some(2) | Some(3) => {}
        None if doc.get("version").is_none() => {
            doc.insert("version", value(2));
        }
        Some(1) => {
            return Err(shape(
                path,
                "a version 1 config: run `containerd config migrate` first (ociguard registers itself in version 2)",
            ))
        }
        _ => return Err(shape(path, "`version` is not 2 or 3")),
    }
    let v3 = doc.get("version").and_then(Item::as_integer) == Some(3);
    let plugins = table(doc.as_table_mut(), "plugins", path)?;
    let cri = if v3 {
        table(plugins, "io.containerd.cri.v1.runtime", path)?
    } else {
        table(
            table(plugins, "io.containerd.grpc.v1.cri", path)?,
            "containerd",
            path,
        )?
    };
    let default_name = cri
        .get("default_runtime_name")
        .and_then(Item::as_str)
        .unwrap_or("runc")
        .to_owned();
    if default {
        cri.insert("default_runtime_name", value(NAME));
    }
    let runtimes = table(cri, "runtimes", path)?;
    // The file's runtimes replace the built-in ones: the default (runc) must stay defined.
    let runc_name = if default_name == NAME {
        "runc".to_owned()
    } else {
        default_name
    };
    if !runtimes.contains_key(&runc_name) {
        let mut runc = Table::new();
        runc.insert("runtime_type", value("io.containerd.runc.v2"));
        runtimes.insert(&runc_name, Item::Table(runc));
    }
    let ours = table(runtimes, NAME, path)?;
    ours.insert("runtime_type", value("io.containerd.runc.v2"));
    let options = table(ours, "options", path)?;
    options.set_implicit(false);
    options.insert("BinaryName", value(binary.display().to_string()));
    Ok(doc.to_string())
}

/// Podman's drop-in (ours alone).
pub fn podman(binary: &Path, default: bool) -> String {
    let mut doc = DocumentMut::new();
    let engine = doc
        .as_table_mut()
        .entry("engine")
        .or_insert(Item::Table(Table::new()));
    if let Some(engine) = engine.as_table_mut() {
        if default {
            engine.insert("runtime", value(NAME));
        }
        let mut runtimes = Table::new();
        let mut paths = toml_edit::Array::new();
        paths.push(binary.display().to_string());
        runtimes.insert(NAME, value(paths));
        engine.insert("runtimes", Item::Table(runtimes));
    }
    format!("# Written by `ociguardctl setup podman`: ociguard as a Podman runtime.\n{doc}")
}

/// CRI-O's drop-in (ours alone).
pub fn crio(binary: &Path, default: bool) -> String {
    let bin = toml_edit::Value::from(binary.display().to_string());
    let mut out =
        String::from("# Written by `ociguardctl setup crio`: ociguard as a CRI-O runtime.\n");
    if default {
        out.push_str(&format!("[crio.runtime]\ndefault_runtime = \"{NAME}\"\n\n"));
    }
    out.push_str(&format!(
        "[crio.runtime.runtimes.{NAME}]\nruntime_path = {bin}\nruntime_type = \"oci\"\nruntime_root = \"/run/{NAME}-crio\"\n"
    ));
    out
}

/// Docker's `daemon.json` with `runtimes.ociguard` merged in.
pub fn docker(old: &str, binary: &Path, default: bool, path: &Path) -> Result<String, SetupError> {
    let mut doc: Value = if old.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(old).map_err(|source| SetupError::Json {
            path: path.display().to_string(),
            source,
        })?
    };
    let root = doc
        .as_object_mut()
        .ok_or_else(|| shape(path, "not a JSON object"))?;
    let runtimes = root
        .entry("runtimes")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
        .ok_or_else(|| shape(path, "`runtimes` is not an object"))?;
    let entry = runtimes
        .entry(NAME)
        .or_insert_with(|| Value::Object(Default::default()));
    let entry = entry
        .as_object_mut()
        .ok_or_else(|| shape(path, "`runtimes.ociguard` is not an object"))?;
    entry.insert("path".into(), Value::String(binary.display().to_string()));
    if default {
        root.insert("default-runtime".into(), Value::String(NAME.to_owned()));
    }
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    Ok(text)
}

/// The new contents of `path` for `engine`, from its current contents.
pub fn render(
    engine: Engine,
    old: &str,
    binary: &Path,
    default: bool,
    path: &Path,
) -> Result<String, SetupError> {
    match engine {
        Engine::Containerd => containerd(old, binary, default, path),
        Engine::Podman => Ok(podman(binary, default)),
        Engine::Docker => docker(old, binary, default, path),
        Engine::Crio => Ok(crio(binary, default)),
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if !args.binary.is_absolute() {
        bail!(
            "--binary {}: engines need an absolute path",
            args.binary.display()
        );
    }
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(args.engine.default_config()));
    let old = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let new = render(args.engine, &old, &args.binary, args.default, &path)?;
    if new == old {
        eprintln!(
            "ociguardctl: {} already registers ociguard: nothing to change",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        let diff = similar::TextDiff::from_lines(&old, &new);
        let name = path.display().to_string();
        write!(
            std::io::stdout().lock(),
            "{}",
            diff.unified_diff().context_radius(3).header(&name, &name)
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if !args.binary.exists() {
        eprintln!(
            "ociguardctl: warning: {} does not exist (yet): the engine will fail to start containers with it",
            args.binary.display()
        );
    }
    write_atomic(&path, new.as_bytes()).with_context(|| format!("write {}", path.display()))?;
    eprintln!(
        "ociguardctl: {} registers ociguard ({}){}; {}",
        path.display(),
        args.binary.display(),
        if args.default {
            " as the default runtime"
        } else {
            ""
        },
        args.engine.restart()
    );
    Ok(ExitCode::SUCCESS)
}

/// Temp file beside `path` with `path`'s mode (0644 for a new file), fsync, rename, directory
/// fsync: the engine (or `ociguard`, for a policy) never reads a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let mut tmp = tempfile::Builder::new()
        .prefix(".ociguardctl-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's /etc/containerd/config.toml as the package ships it.
    const DEBIAN: &str = "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n      conf_dir = \"/etc/cni/net.d\"\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"/var/lib/containerd/opt\"\n";

    fn bin() -> &'static Path {
        Path::new("/usr/local/bin/ociguard")
    }

    #[test]
    fn containerd_keeps_runc_and_everything_else_and_is_idempotent() {
        let p = Path::new("config.toml");
        let once = containerd(DEBIAN, bin(), false, p).unwrap();
        let v: toml::Value = toml::from_str(&once).unwrap();
        let rt = &v["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert_eq!(
            rt["runc"]["runtime_type"].as_str(),
            Some("io.containerd.runc.v2")
        );
        assert_eq!(
            rt["ociguard"]["options"]["BinaryName"].as_str(),
            Some("/usr/local/bin/ociguard")
        );
        assert_eq!(
            v["plugins"]["io.containerd.grpc.v1.cri"]["cni"]["bin_dir"].as_str(),
            Some("/usr/lib/cni")
        );
        // Nothing of the shipped file is lost or reformatted.
        for line in DEBIAN.lines() {
            assert!(once.lines().any(|l| l == line), "{line:?} lost:\n{once}");
        }
        assert_eq!(containerd(&once, bin(), false, p).unwrap(), once);
        // --default: CRI's default becomes ociguard, runc stays defined.
        let d = containerd(&once, bin(), true, p).unwrap();
        let v: toml::Value = toml::from_str(&d).unwrap();
        let c = &v["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
        assert_eq!(c["default_runtime_name"].as_str(), Some("ociguard"));
        assert!(c["runtimes"].get("runc").is_some());
    }

    #[test]
    fn containerd_empty_custom_default_and_refusals() {
        let p = Path::new("c.toml");
        let v: toml::Value = toml::from_str(&containerd("", bin(), false, p).unwrap()).unwrap();
        assert_eq!(v["version"].as_integer(), Some(2));
        // A default runtime of the operator's own stays the one kept defined.
        let custom = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"crun\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.crun]\nruntime_type = \"io.containerd.runc.v2\"\n";
        let out = containerd(custom, bin(), false, p).unwrap();
        let v: toml::Value = toml::from_str(&out).unwrap();
        let rt = &v["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert!(
            rt.get("runc").is_none() && rt.get("crun").is_some() && rt.get("ociguard").is_some()
        );
        // containerd 2.x (version 3) keeps CRI's runtimes elsewhere.
        let v: toml::Value =
            toml::from_str(&containerd("version = 3\n", bin(), false, p).unwrap()).unwrap();
        assert!(v["plugins"]["io.containerd.cri.v1.runtime"]["runtimes"]["ociguard"].is_table());
        let e = containerd("version = 1\n", bin(), false, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("containerd config migrate"), "{e}");
        let e = containerd("version = [", bin(), false, p)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml: not valid TOML"), "{e}");
        let e = containerd("version = 2\nplugins = 3\n", bin(), false, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`plugins` is not a table"), "{e}");
    }

    #[test]
    fn docker_merges_and_keeps_other_keys() {
        let p = Path::new("daemon.json");
        let old = "{\"log-driver\": \"journald\", \"runtimes\": {\"other\": {\"path\": \"/x\"}}}";
        let out = docker(old, bin(), false, p).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["log-driver"], "journald");
        assert_eq!(v["runtimes"]["other"]["path"], "/x");
        assert_eq!(v["runtimes"]["ociguard"]["path"], "/usr/local/bin/ociguard");
        assert!(v.get("default-runtime").is_none());
        assert_eq!(docker(&out, bin(), false, p).unwrap(), out);
        let d: Value = serde_json::from_str(&docker("", bin(), true, p).unwrap()).unwrap();
        assert_eq!(d["default-runtime"], "ociguard");
        assert!(docker("[1]", bin(), false, p)
            .unwrap_err()
            .to_string()
            .contains("not a JSON object"));
        assert!(docker("{", bin(), false, p)
            .unwrap_err()
            .to_string()
            .starts_with("daemon.json: not valid JSON"));
    }

    #[test]
    fn drop_ins_for_podman_and_crio_parse() {
        let v: toml::Value = toml::from_str(&podman(bin(), true)).unwrap();
        assert_eq!(v["engine"]["runtime"].as_str(), Some("ociguard"));
        assert_eq!(
            v["engine"]["runtimes"]["ociguard"][0].as_str(),
            Some("/usr/local/bin/ociguard")
        );
        let v: toml::Value = toml::from_str(&crio(bin(), false)).unwrap();
        let rt = &v["crio"]["runtime"]["runtimes"]["ociguard"];
        assert_eq!(rt["runtime_path"].as_str(), Some("/usr/local/bin/ociguard"));
        assert!(v["crio"]["runtime"].get("default_runtime").is_none());
        let v: toml::Value = toml::from_str(&crio(bin(), true)).unwrap();
        assert_eq!(
            v["crio"]["runtime"]["default_runtime"].as_str(),
            Some("ociguard")
        );
    }
}

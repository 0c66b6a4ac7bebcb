//! The modules of `policy/src` form no cycle (issue 16): each one is read by what is above it
//! and never reads back, so a module can be understood, and tested, from the ones below it.
//!
//! The graph is built from the source text: every `crate::a` path (in `use` items, including
//! `use crate::{a, b::c}` groups, and in code, including `"crate::a::f"` strings that serde
//! attributes name) is an edge from the file's top-level module to `a`; a name the crate root
//! re-exports (`crate::PolicySet`) is an edge to the module it comes from. Comments and
//! `#[cfg(test)]` modules are left out: a test may use whatever builds its input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// `text` without comments, with string and char literals emptied (a string that names a
/// `crate::` path is kept: serde's `skip_serializing_if = "crate::x::f"` is a use of `x`).
fn strip_comments_and_literals(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            // Block comments nest in Rust.
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                if text[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if text[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = j;
        } else if let Some(len) = raw_string_len(rest).filter(|_| i == 0 || !ident(b[i - 1])) {
            out.push_str("\"\"");
            i += len;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let body = &text[i..(j + 1).min(b.len())];
            out.push_str(if body.starts_with("\"crate::") {
                body
            } else {
                "\"\""
            });
            i = j + 1;
        } else if b[i] == b'\'' {
            // A char literal ('{', '\'', '\u{7b}'); a lifetime has no closing quote nearby.
            let close = if rest[1..].starts_with('\\') {
                rest[2..].find('\'').map(|k| k + 2)
            } else {
                rest[1..].chars().next().map(|c| 1 + c.len_utf8())
            };
            match close.filter(|&k| rest[k..].starts_with('\'')) {
                Some(k) => {
                    out.push_str("' '");
                    i += k + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().expect("i < len");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) at the start of `s`.
fn raw_string_len(s: &str) -> Option<usize> {
    let after_b = s.strip_prefix('b').unwrap_or(s);
    let after_r = after_b.strip_prefix('r')?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    let body = after_r[hashes..].strip_prefix('"')?;
    let end = format!("\"{}", "#".repeat(hashes));
    let close = body.find(&end)?;
    Some(s.len() - body.len() + close + end.len())
}

/// `text` (already stripped) without `#[cfg(test)] mod x { … }` blocks.
fn strip_test_modules(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let is_mod = after
            .strip_prefix("mod ")
            .or_else(|| after.strip_prefix("pub mod "))
            .is_some();
        match after.find(['{', ';']).filter(|_| is_mod) {
            Some(open) if after.as_bytes()[open] == b'{' => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (k, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            Some(semi) => rest = &after[semi + 1..],
            // An attribute on something else (a function, an impl): keep it.
            None => {
                out.push_str("#[cfg(test)]");
                rest = &rest[at + "#[cfg(test)]".len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The first segment of every `crate::` path in `code`, groups expanded one level:
/// `crate::a::b` → `a`, `crate::{a, b::{c, d}}` → `a`, `b`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before_ok = !matches!(
            rest[..at].chars().next_back(),
            Some(c) if c.is_alphanumeric() || c == '_' || c == '$'
        );
        rest = &rest[at + "crate::".len()..];
        if !before_ok {
            continue;
        }
        let after = rest.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // Split the group's top level on commas.
            let (mut depth, mut start) = (0usize, 0usize);
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.extend(leading_ident(&group[start..k]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.extend(leading_ident(&group[start..k]));
                        start = k + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.extend(leading_ident(after));
        }
    }
    names
}

fn leading_ident(s: &str) -> Option<String> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| s[..end].to_owned())
}

/// Names the crate root re-exports (`pub use load::{A, B};`) → the module they come from.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for item in lib.split(';') {
        let Some(path) = item.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim().trim_start_matches("crate::");
        let Some((module, names)) = path.split_once("::") else {
            continue;
        };
        for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if !name.is_empty() && name != "self" {
                map.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    map
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read policy/src") {
        let path = entry.expect("read policy/src entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module graph of the crate whose sources are under `src`.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    // `a.rs` and everything under `a/` is module `a`.
    let top = |p: &Path| {
        let rel = p.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("non-empty");
        let name = first.as_os_str().to_string_lossy();
        name.strip_suffix(".rs").unwrap_or(&name).to_owned()
    };
    let modules: BTreeSet<String> = files
        .iter()
        .map(|p| top(p))
        .filter(|m| m != "lib")
        .collect();
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let reexports = root_reexports(&strip_comments_and_literals(&lib));
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in &files {
        let from = top(file);
        if from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let code = strip_test_modules(&strip_comments_and_literals(&text));
        for name in crate_paths(&code) {
            let to = if modules.contains(&name) {
                Some(name)
            } else {
                reexports.get(&name).cloned()
            };
            if let Some(to) = to.filter(|to| *to != from) {
                graph.get_mut(&from).expect("every module").insert(to);
            }
        }
    }
    graph
}

/// One cycle of `graph`, as the modules along it, if there is any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        New,
        OnPath,
        Done,
    }
    fn visit<'a>(
        graph: &'a Graph,
        node: &'a str,
        state: &mut BTreeMap<&'a str, State>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        state.insert(node, State::OnPath);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(State::New) {
                State::OnPath => {
                    let start = path.iter().position(|m| m == next).expect("on the path");
                    let mut cycle: Vec<String> =
                        path[start..].iter().map(|m| (*m).to_owned()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                State::New => {
                    if let Some(cycle) = visit(graph, next, state, path) {
                        return Some(cycle);
                    }
                }
                State::Done => {}
            }
        }
        path.pop();
        state.insert(node, State::Done);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(State::New) == State::New {
            if let Some(cycle) = visit(graph, node, &mut state, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn policy_modules_have_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    // The parser must see the edges that are certainly there, or "no cycle" means nothing.
    for (from, to) in [
        ("decision", "rewrite"),
        ("decision", "set"),
        ("load", "egress"),
        ("model", "seccomp"),
    ] {
        assert!(
            graph.get(from).is_some_and(|t| t.contains(to)),
            "module graph misses {from} -> {to}: {graph:#?}"
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "policy/src modules form a cycle: {}\n(move the shared items to a module below both; graph: {graph:#?})",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn paths_groups_reexports_and_test_modules() {
    let code = strip_test_modules(&strip_comments_and_literals(
        r#"
use crate::{a, b::{c, d}, self as _};
use crate::e::{self, F};
// use crate::commented;
/* crate::blocked /* nested */ crate::still_comment */
#[serde(skip_serializing_if = "crate::g::is_off")]
fn f() { let _ = crate::h::x(); let _ = "crate is crate::not_here'{"; let _ = '{'; }
fn lifetime<'a>(x: &'a str) -> &'a str { crate::i::y(x) }
#[cfg(test)]
mod tests { use crate::only_in_tests; fn t() { let _ = "}"; } }
#[cfg(test)]
fn helper() { crate::j::z(); }
"#,
    ));
    let names: Vec<String> = crate_paths(&code).into_iter().collect();
    assert_eq!(names, ["a", "b", "e", "g", "h", "i", "j", "self"]);

    let map = root_reexports("pub mod x;\npub use load::{A, B};\npub use model::Mode;\n");
    assert_eq!(map.get("A").map(String::as_str), Some("load"));
    assert_eq!(map.get("Mode").map(String::as_str), Some("model"));

    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default();
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&g).map(|c| c.join(" -> ")).as_deref(),
        Some("a -> b -> c -> a")
    );
}

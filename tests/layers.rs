//! The layer map of ARCHITECTURE.md, checked: a module of the crate may name only modules of lower layers (and
//! itself), and only `src/base/` may name `std::sync::atomic` / `core::sync::atomic`.
//!
//! The check reads the sources as text: every `crate::<module>` or `pyconc::<module>` path and every
//! `use super::...` that leaves the top-level module counts, outside comments and outside the test modules at
//! the end of a file (`#[cfg(test)] mod ...`) and test-only files (`tests.rs`, `loom_tests.rs`), where a lower
//! layer may build higher structures to test against.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Layers from the ground up. Modules of one layer do not name each other.
const LAYERS: &[&[&str]] = &[
    &["base", "error"],
    &["platform"],
    &["segment", "codec"],
    &["sync"],
    &["objects"],
    &["queue", "dict", "deque"],
    &["python"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`src/sync/lock.rs` -> `sync`, `src/error.rs` ->
/// `error`); `None` for `lib.rs`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(m) => Some(m.to_string()),
        None => Some(first),
    }
}

/// The code lines of a file that count: comments stripped, test modules at the end cut off.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") || t.starts_with("#[cfg(all(test") {
            let next = lines[i + 1..].iter().map(|l| l.trim_start()).find(|l| !l.is_empty()).unwrap_or("");
            if next.starts_with("mod ") || next.starts_with("pub mod ") || next.starts_with("pub(crate) mod ") {
                if next.ends_with(';') {
                    continue; // a test module in its own file: that file is skipped by name
                }
                break;
            }
        }
        let code = match t.find("//") {
            Some(at) => &t[..at],
            None => t,
        };
        if !code.trim().is_empty() {
            out.push((i + 1, code.to_string()));
        }
    }
    out
}

/// Top-level modules named by `crate::x` / `pyconc::x` paths on a line.
fn named_modules(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["crate::", "pyconc::"] {
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // part of a longer path such as `some_crate::`
            }
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    // `use crate::{a::b, c}` names several modules at once.
    if let Some(at) = line.find("crate::{") {
        let inner = &line[at + "crate::{".len()..];
        for part in inner.split(',') {
            let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn lower_layers_never_name_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut violations = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        if name == "tests.rs" || name == "loom_tests.rs" {
            continue;
        }
        let Some(module) = module_of(&src, file) else { continue };
        let own = layer_of(&module).unwrap_or_else(|| {
            panic!("{}: module `{module}` has no layer in LAYERS (add it here and to ARCHITECTURE.md)", file.display())
        });
        *seen.entry(module.clone()).or_default() += 1;
        let text = fs::read_to_string(file).unwrap();
        for (n, line) in code_lines(&text) {
            for named in named_modules(&line) {
                let Some(other) = layer_of(&named) else { continue }; // an item of lib.rs (Error, Result)
                if named != module && other >= own {
                    violations.push(format!(
                        "{}:{n}: `{module}` (layer {own}) names `{named}` (layer {other})",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "upward or sideways dependencies:\n{}", violations.join("\n"));
    for layer in LAYERS {
        for m in *layer {
            assert!(seen.contains_key(*m), "LAYERS names `{m}`, which has no file under src/");
        }
    }
}

#[test]
fn atomics_come_from_base() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        if root.join(dir).is_dir() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    let base = root.join("src").join("base");
    let mut violations = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(&base) && !f.ends_with("layers.rs")) {
        let text = fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("std::sync::atomic") || code.contains("core::sync::atomic") {
                violations.push(format!("{}:{}", file.display(), n + 1));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "atomics must come from crate::base::atomic (shared memory) or base::atomic::local (process-local):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_a_violation() {
    // The parser itself: an upward path in code counts; the same path in a comment or a test module does not.
    let text =
        "use crate::sync::lock;\n// crate::python\nfn f() {}\n#[cfg(test)]\nmod tests {\n use crate::python;\n}\n";
    let named: Vec<String> = code_lines(text).iter().flat_map(|(_, l)| named_modules(l)).collect();
    assert_eq!(named, vec!["sync".to_string()]);
    assert_eq!(named_modules("use crate::{segment::Segment, sync::wait};"), vec!["segment", "sync"]);
}

//! The crate's layout, checked from its own source: the parts import one another in one
//! direction only, no two modules import each other (directly or round a longer
//! circle), and no file grows past the size a reader can take in.
//!
//! What counts as an import: every path `crate::a::b::...` and `super::...` in a file's
//! code (comments and a file's `#[cfg(test)] mod tests` are left out), resolved to the
//! module it names. A name a module re-exports (`pub use inner::Name`) resolves to the
//! module that defines it, so a facade does not hide an arrow. A module and its own
//! submodules are one part and may use each other (Rust's `impl` blocks spread over a
//! folder's files, a `mod.rs` re-exporting its files); every other pair is checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The parts, bottom first: a module may import from its own part and from parts of a
/// lower rank, never from one of the same or a higher rank.
const PARTS: &[(&str, u32)] = &[
    ("base", 0),
    ("http", 1),
    ("netstring", 1),
    ("pipeline", 2),
    ("stages", 3),
    ("jobs", 3),
    ("server", 4),
    ("deploy", 5),
    ("demo", 6),
];

/// The longest file in `src/`, in lines.
const MAX_FILE_LINES: usize = 900;
/// The front end's loop (`src/server/mod.rs`), in lines.
const MAX_SERVER_LOOP_LINES: usize = 600;

type Module = Vec<String>;

struct Crate {
    /// Every module and the text of its file.
    files: BTreeMap<Module, (PathBuf, String)>,
    /// (module, name) re-exported there → the module that defines the name.
    reexports: BTreeMap<(Module, String), Module>,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).expect("a file under src");
    let mut parts: Module = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code: no comment lines, and no unit tests module.
fn code_of(text: &str) -> String {
    let cut = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..cut]
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `::`-separated path of identifiers that starts at `at` in `code`.
fn path_at(code: &str, at: usize) -> Vec<&str> {
    let rest = &code[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].split("::").filter(|s| !s.is_empty()).collect()
}

/// Every place `word` starts a path in `code` (not inside a longer identifier).
fn path_starts<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    code.match_indices(word).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        let starts = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        starts.then_some(at + word.len())
    })
}

impl Crate {
    fn read() -> Crate {
        let src = src_dir();
        let mut paths = Vec::new();
        rust_files(&src, &mut paths);
        let mut files = BTreeMap::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            files.insert(module_of(&src, &path), (path, text));
        }
        let mut krate = Crate {
            files,
            reexports: BTreeMap::new(),
        };
        krate.reexports = krate.find_reexports();
        krate
    }

    /// `pub use a::b::{C, D};` and `pub use a::b::C;` in each module.
    fn find_reexports(&self) -> BTreeMap<(Module, String), Module> {
        let mut found = BTreeMap::new();
        for (module, (_, text)) in &self.files {
            for line in code_of(text).lines() {
                let line = line.trim();
                let Some(rest) = ["pub use ", "pub(crate) use "]
                    .iter()
                    .find_map(|p| line.strip_prefix(p))
                else {
                    continue;
                };
                let rest = rest.trim_end_matches(';');
                let (base, names): (&str, Vec<&str>) = match rest.split_once("::{") {
                    Some((base, names)) => (
                        base,
                        names
                            .trim_end_matches('}')
                            .split(',')
                            .map(str::trim)
                            .collect(),
                    ),
                    None => match rest.rsplit_once("::") {
                        Some((base, name)) => (base, vec![name]),
                        None => continue,
                    },
                };
                let base: Vec<&str> = base.split("::").collect();
                let Some(target) = self.resolve_path(module, &base) else {
                    continue;
                };
                for name in names.into_iter().filter(|n| !n.is_empty() && *n != "self") {
                    found.insert((module.clone(), name.to_string()), target.clone());
                }
            }
        }
        found
    }

    /// The module a path names from inside `from`: `crate::...`, `super::...`, or a
    /// child of `from` (the form `pub use` lines take).
    fn resolve_path(&self, from: &Module, path: &[&str]) -> Option<Module> {
        let (mut base, rest): (Module, &[&str]) = match path.first() {
            Some(&"crate") => (Vec::new(), &path[1..]),
            Some(&"super") => {
                let supers = path.iter().take_while(|s| **s == "super").count();
                let mut base = from.clone();
                for _ in 0..supers {
                    base.pop()?;
                }
                (base, &path[supers..])
            }
            Some(&"self") => (from.clone(), &path[1..]),
            _ => (from.clone(), path),
        };
        let mut resolved = base.clone();
        for segment in rest {
            base.push(segment.to_string());
            if self.files.contains_key(&base) {
                resolved = base.clone();
            } else if let Some(target) =
                self.reexports.get(&(resolved.clone(), segment.to_string()))
            {
                return Some(target.clone());
            } else {
                break;
            }
        }
        self.files.contains_key(&resolved).then_some(resolved)
    }

    /// Every module `module` imports, other than itself, its ancestors and its own
    /// submodules.
    fn imports(&self, module: &Module) -> BTreeSet<Module> {
        let (_, text) = &self.files[module];
        let code = code_of(text);
        let mut found = BTreeSet::new();
        for word in ["crate::", "super::"] {
            for at in path_starts(&code, word) {
                let mut path = vec![word.trim_end_matches(':')];
                path.extend(path_at(&code, at));
                let Some(target) = self.resolve_path(module, &path) else {
                    continue;
                };
                if !target.starts_with(module) && !module.starts_with(&target) {
                    found.insert(target);
                }
            }
        }
        found
    }

    fn graph(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        self.files
            .keys()
            .map(|m| (m.clone(), self.imports(m)))
            .collect()
    }
}

fn show(module: &Module) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

/// A circle of imports through `start`, if there is one.
fn circle_through(
    graph: &BTreeMap<Module, BTreeSet<Module>>,
    start: &Module,
) -> Option<Vec<Module>> {
    // Depth-first search for a way back to `start`, keeping the way taken.
    let mut stack: Vec<(Module, Vec<Module>)> = vec![(start.clone(), vec![start.clone()])];
    let mut seen = BTreeSet::new();
    while let Some((at, way)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == start {
                let mut circle = way.clone();
                circle.push(start.clone());
                return Some(circle);
            }
            if seen.insert(next.clone()) {
                let mut longer = way.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it() {
    let krate = Crate::read();
    let graph = krate.graph();
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|m| circle_through(&graph, m))
        .map(|circle| circle.iter().map(show).collect::<Vec<_>>().join(" -> "))
        .collect();
    assert!(
        circles.is_empty(),
        "circles of imports:\n{}",
        circles.join("\n")
    );
}

#[test]
fn every_part_imports_only_parts_below_it() {
    let krate = Crate::read();
    let rank = |module: &Module| -> Option<(&str, u32)> {
        let part = module.first()?;
        PARTS.iter().find(|(name, _)| name == part).copied()
    };
    let mut wrong = Vec::new();
    for (module, imports) in krate.graph() {
        if module.is_empty() {
            continue; // lib.rs: the crate's docs and re-exports
        }
        let Some((part, own)) = rank(&module) else {
            wrong.push(format!("{} is in no part listed in PARTS", show(&module)));
            continue;
        };
        for target in imports {
            match rank(&target) {
                Some((other, _)) if other == part => {}
                Some((_, theirs)) if theirs < own => {}
                _ => wrong.push(format!("{} imports {}", show(&module), show(&target))),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_source_file_is_too_long_to_read() {
    let krate = Crate::read();
    let mut long = Vec::new();
    for (path, text) in krate.files.values() {
        let lines = text.lines().count();
        let limit = if path.ends_with("server/mod.rs") {
            MAX_SERVER_LOOP_LINES
        } else {
            MAX_FILE_LINES
        };
        if lines > limit {
            long.push(format!(
                "{} has {lines} lines (at most {limit})",
                path.display()
            ));
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
}

#[test]
fn the_checker_sees_imports_and_circles() {
    // The check above must be able to fail: a made-up pair that imports each other,
    // through a path, a re-export and `super::`.
    let mut files = BTreeMap::new();
    let module = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    let file = |text: &str| (PathBuf::from("x.rs"), text.to_string());
    files.insert(module("a"), file("pub mod inner;\npub use inner::Thing;\n"));
    files.insert(
        module("a::inner"),
        file("use crate::b::Other;\npub struct Thing;\n"),
    );
    files.insert(
        module("b"),
        file("// use crate::c;\nuse crate::a::Thing;\npub struct Other;\n"),
    );
    files.insert(module("c"), file("use super::b::Other;\n"));
    let mut krate = Crate {
        files,
        reexports: BTreeMap::new(),
    };
    krate.reexports = krate.find_reexports();
    let graph = krate.graph();
    assert_eq!(graph[&module("b")], BTreeSet::from([module("a::inner")]));
    assert_eq!(graph[&module("c")], BTreeSet::from([module("b")]));
    assert!(circle_through(&graph, &module("b")).is_some());
    assert!(circle_through(&graph, &module("c")).is_none());
}

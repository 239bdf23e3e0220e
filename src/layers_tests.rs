//! The top-level modules form layers: none names a module that names it
//! back, directly or through others (docs/ARCHITECTURE.md, "Layers").
//! A cycle fails this test with the path that closes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules named as `crate::NAME` in `text`, comments left out.
fn named(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if modules.contains(&rest[..end]) {
                found.insert(rest[..end].to_string());
            }
        }
    }
    found
}

/// Module -> the modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut roots = BTreeMap::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        // `*_tests.rs` beside a file module belong to it (`#[path]`).
        if ["lib", "main", "bin"].contains(&name.as_str()) || name.ends_with("_tests") {
            continue;
        }
        roots.entry(name).or_insert_with(Vec::new).push(p);
    }
    let modules: BTreeSet<String> = roots.keys().cloned().collect();
    roots
        .into_iter()
        .map(|(m, paths)| {
            let mut all = Vec::new();
            for p in paths {
                if p.is_dir() {
                    files(&p, &mut all);
                } else {
                    all.push(p);
                }
            }
            let mut uses = BTreeSet::new();
            for f in all {
                uses.extend(named(&std::fs::read_to_string(f).unwrap(), &modules));
            }
            uses.remove(&m);
            (m, uses)
        })
        .collect()
}

/// A path `from -> ... -> from`, if there is one.
fn cycle_through(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        for next in &g[path.last().unwrap()] {
            if next == from {
                let mut closed = path.clone();
                closed.push(next.clone());
                return Some(closed);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_names_one_that_names_it_back() {
    let g = graph();
    assert!(g.len() > 10, "modules found: {:?}", g.keys());
    let cycles: Vec<String> = g
        .keys()
        .filter_map(|m| cycle_through(&g, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn a_cycle_is_found_and_shown() {
    let modules: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", named("use crate::b::X; // crate::c", &modules)),
        ("b", named("fn f() { crate::c::g() }", &modules)),
        ("c", named("use crate::a;\n", &modules)),
    ]
    .into_iter()
    .map(|(m, u)| (m.to_string(), u))
    .collect();
    assert_eq!(g["a"], ["b".to_string()].into());
    assert_eq!(
        cycle_through(&g, "a").unwrap(),
        ["a", "b", "c", "a"].map(String::from)
    );
}

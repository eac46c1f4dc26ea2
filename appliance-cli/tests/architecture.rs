//! The crate map in docs/architecture.md is the contract for the workspace's
//! structure: every crate is listed with its path and the workspace crates
//! it may depend on, and a trusted device crate may depend only on trusted
//! crates. This test holds every `Cargo.toml` to it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

struct Row {
    path: String,
    trust: String,
    may: BTreeSet<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The names in backquotes in a table cell.
fn quoted(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn crate_map() -> BTreeMap<String, Row> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let section = doc
        .split("\n## Crate map\n")
        .nth(1)
        .expect("docs/architecture.md has a `## Crate map` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut map = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 5, "a crate-map row has five cells: {line}");
        let name = quoted(cells[0]).pop().expect("a crate name");
        let row = Row {
            path: quoted(cells[1]).pop().expect("a path"),
            trust: cells[3].to_string(),
            may: quoted(cells[4]).into_iter().collect(),
        };
        assert!(map.insert(name.clone(), row).is_none(), "{name} twice");
    }
    map
}

fn toml_at(path: &Path) -> toml::Table {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Workspace members: name → (path, the workspace crates its
/// `[dependencies]` and `[build-dependencies]` name).
fn members() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let ws = toml_at(&root().join("Cargo.toml"));
    let members = ws["workspace"]["members"].as_array().unwrap();
    let paths: Vec<String> = members
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    let names: BTreeMap<String, String> = paths
        .iter()
        .map(|p| {
            let t = toml_at(&root().join(p).join("Cargo.toml"));
            (
                t["package"]["name"].as_str().unwrap().to_string(),
                p.clone(),
            )
        })
        .collect();
    names
        .iter()
        .map(|(name, path)| {
            let t = toml_at(&root().join(path).join("Cargo.toml"));
            let deps = ["dependencies", "build-dependencies"]
                .iter()
                .filter_map(|k| t.get(*k).and_then(|d| d.as_table()))
                .flat_map(|d| d.keys().cloned())
                .filter(|d| names.contains_key(d))
                .collect();
            (name.clone(), (path.clone(), deps))
        })
        .collect()
}

#[test]
fn every_crate_is_on_the_map_at_its_path() {
    let map = crate_map();
    let members = members();
    let listed: BTreeSet<&String> = map.keys().collect();
    let present: BTreeSet<&String> = members.keys().collect();
    assert_eq!(
        listed, present,
        "docs/architecture.md's crate map and the workspace members differ"
    );
    for (name, (path, _)) in &members {
        assert_eq!(&map[name].path, path, "{name}'s path");
    }
}

#[test]
fn every_crate_depends_only_on_what_the_map_allows() {
    let map = crate_map();
    for (name, (_, deps)) in members() {
        let extra: Vec<&String> = deps.difference(&map[&name].may).collect();
        assert!(
            extra.is_empty(),
            "{name} depends on {extra:?}, which docs/architecture.md does not allow it"
        );
    }
}

#[test]
fn trusted_device_crates_depend_only_on_trusted_crates() {
    let map = crate_map();
    let mut device = 0;
    for (name, row) in &map {
        if row.trust != "trusted (device)" {
            continue;
        }
        device += 1;
        for dep in &row.may {
            let t = &map
                .get(dep)
                .unwrap_or_else(|| panic!("{name} may depend on unknown {dep}"))
                .trust;
            assert!(
                t.starts_with("trusted (device"),
                "trusted device crate {name} may depend on {dep}, which is {t}"
            );
        }
    }
    assert!(
        device >= 6,
        "only {device} trusted device crates on the map"
    );
}

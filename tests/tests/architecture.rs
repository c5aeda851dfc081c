//! `docs/ARCHITECTURE.md` against the workspace: the crate order the document states is the
//! order the manifests follow.
//!
//! The document has one line `Crate order: `a` → `b` → …`; a crate may depend only on crates
//! before it on that line (normal, build and development dependencies alike). Crates are
//! named by their directory (`crates/store` is `store`, `tests` is `tests`). The real graph
//! comes from `cargo metadata --no-deps`: the path dependencies of every workspace member.
//! The test fails when a crate depends on one the line does not allow, when a workspace
//! crate is missing from the line, or when the line names a crate that does not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The prefix of the line that states the order.
const ORDER_LINE: &str = "Crate order: ";

/// Each workspace crate (by directory name) with the workspace crates it depends on (in
/// any kind of dependency, each once).
type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn crates_depend_only_on_crates_before_them_in_the_documented_order() {
    let root = workspace_root();
    let document = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md is readable");
    let order = documented_order(&document).expect("docs/ARCHITECTURE.md states the order");
    let graph = workspace_graph(&root);
    assert!(graph.len() > 1, "the workspace has crates: {graph:?}");
    let problems = violations(&order, &graph);
    assert!(
        problems.is_empty(),
        "docs/ARCHITECTURE.md's `{ORDER_LINE}` line does not match the manifests:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_order_line_is_read_from_the_document() {
    let document = "# A\n\nText.\n\nCrate order: `core` → `store` → `server`\n\nMore.\n";
    assert_eq!(
        documented_order(document),
        Ok(vec![
            "core".to_owned(),
            "store".to_owned(),
            "server".to_owned()
        ])
    );
    assert!(documented_order("no such line").is_err());
    assert!(documented_order("Crate order: `a` → b").is_err());
    assert!(documented_order("Crate order: `a` → `b`\nCrate order: `a`").is_err());
    assert!(documented_order("Crate order: `a` → `b` → `a`").is_err());
}

#[test]
fn every_kind_of_mismatch_is_reported() {
    let order: Vec<String> = ["core", "store", "ingest", "ghost"]
        .map(str::to_owned)
        .into();
    let graph: Graph = [
        ("core", vec![]),
        ("store", vec!["core", "store"]),
        ("ingest", vec!["core", "store"]),
        ("unlisted", vec!["core"]),
    ]
    .into_iter()
    .map(|(name, deps)| {
        (
            name.to_owned(),
            deps.into_iter().map(str::to_owned).collect(),
        )
    })
    .collect();
    assert_eq!(
        violations(&order, &graph),
        [
            "`unlisted` is a workspace crate but is not in the order",
            "`ghost` is in the order but is not a workspace crate",
        ]
    );

    let backwards: Graph = [
        ("core", vec!["store"]),
        ("store", vec![]),
        ("ingest", vec![]),
    ]
    .into_iter()
    .map(|(name, deps)| {
        (
            name.to_owned(),
            deps.into_iter().map(str::to_owned).collect(),
        )
    })
    .collect();
    let order: Vec<String> = ["core", "store", "ingest"].map(str::to_owned).into();
    assert_eq!(
        violations(&order, &backwards),
        ["`core` depends on `store`, which comes after it"]
    );
}

/// The crate names on the document's order line, in order.
fn documented_order(document: &str) -> Result<Vec<String>, String> {
    let mut lines = document
        .lines()
        .filter_map(|line| line.strip_prefix(ORDER_LINE));
    let line = lines
        .next()
        .ok_or_else(|| format!("no line starts with {ORDER_LINE:?}"))?;
    if lines.next().is_some() {
        return Err(format!("more than one line starts with {ORDER_LINE:?}"));
    }
    let mut order = Vec::new();
    for item in line.split('→').map(str::trim) {
        let name = item
            .strip_prefix('`')
            .and_then(|rest| rest.strip_suffix('`'))
            .filter(|name| !name.is_empty() && !name.contains('`'))
            .ok_or_else(|| format!("{item:?} is not a crate name in backticks"))?;
        if order.iter().any(|known| known == name) {
            return Err(format!("`{name}` appears twice"));
        }
        order.push(name.to_owned());
    }
    Ok(order)
}

/// What is wrong with `order` for `graph`, one line each; empty when they agree.
fn violations(order: &[String], graph: &Graph) -> Vec<String> {
    let position = |name: &str| order.iter().position(|known| known == name);
    let mut problems = Vec::new();
    for (krate, dependencies) in graph {
        let Some(own) = position(krate) else {
            problems.push(format!(
                "`{krate}` is a workspace crate but is not in the order"
            ));
            continue;
        };
        // A dependency missing from the order is reported once, as a crate missing.
        for dependency in dependencies.iter().filter(|d| *d != krate) {
            if position(dependency).is_some_and(|theirs| theirs > own) {
                problems.push(format!(
                    "`{krate}` depends on `{dependency}`, which comes after it"
                ));
            }
        }
    }
    for name in order {
        if !graph.contains_key(name) {
            problems.push(format!(
                "`{name}` is in the order but is not a workspace crate"
            ));
        }
    }
    problems
}

/// The workspace's crates and their path dependencies, from `cargo metadata`.
fn workspace_graph(root: &Path) -> Graph {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("a package list");
    packages
        .iter()
        .map(|package| {
            let manifest = package["manifest_path"].as_str().expect("a manifest path");
            let dependencies = package["dependencies"]
                .as_array()
                .expect("a dependency list")
                .iter()
                .filter_map(|dependency| dependency["path"].as_str())
                .map(|path| directory_name(Path::new(path)))
                .collect();
            (
                directory_name(Path::new(manifest).parent().expect("a crate directory")),
                dependencies,
            )
        })
        .collect()
}

fn directory_name(path: &Path) -> String {
    path.file_name()
        .expect("a named directory")
        .to_string_lossy()
        .into_owned()
}

/// The workspace root: the parent of this crate's directory (`tests/`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_owned()
}

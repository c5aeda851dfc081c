//! The deployment manifests under `deploy/`, rendered as Kubernetes would receive them:
//! every directory holding a `kustomization.yaml` is built with `kubectl kustomize` (offline,
//! kustomize v5 built into kubectl), and the YAML stream is split into objects.
//!
//! `tests/tests/deploy/` validates every object; the broker's and the agent's own tests
//! read the configuration files the manifests carry ([`config_map_file`]) and parse them
//! with the real loaders.
//!
//! `kubectl` must be on `PATH` (CI has it): a missing one fails the caller with a message
//! saying so, never skips it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::Value;

/// The directory that holds the manifests, relative to the workspace root.
pub const DEPLOY_DIR: &str = "deploy";

/// The names kustomize accepts for a directory's kustomization file.
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// One rendered manifest directory.
#[derive(Debug, Clone)]
pub struct Render {
    /// Relative to the workspace root, with `/` separators: `deploy/agent`.
    pub dir: String,
    /// Every object of the output, in order.
    pub objects: Vec<Value>,
}

impl Render {
    /// The objects of `kind` (any apiVersion).
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |object| object["kind"] == kind)
    }

    /// The one object of `kind` named `name`, if there is one.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
    }
}

/// The workspace root (the directory holding `deploy/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_owned()
}

/// Every directory under `deploy/` that holds a kustomization file, relative to the
/// workspace root, sorted. A new directory is found without being listed anywhere.
pub fn kustomization_dirs() -> Vec<String> {
    let root = workspace_root();
    let mut found = Vec::new();
    let mut pending = vec![root.join(DEPLOY_DIR)];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            }
        }
        if KUSTOMIZATION_FILES
            .iter()
            .any(|name| dir.join(name).is_file())
        {
            let relative = dir
                .strip_prefix(&root)
                .expect("under the workspace root")
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            found.push(relative);
        }
    }
    found.sort();
    found
}

/// Renders `dir` (relative to the workspace root) with `kubectl kustomize`.
///
/// # Panics
///
/// If `kubectl` cannot be run, if kustomize refuses the directory (its message is
/// included), or if the output is not a YAML stream of objects.
pub fn render(dir: &str) -> Render {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(workspace_root().join(dir))
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run `kubectl kustomize {dir}`: {err}. The deployment tests need \
                 kubectl (v1.27 or later, with kustomize v5) on PATH; CI has it."
            )
        });
    assert!(
        output.status.success(),
        "`kubectl kustomize {dir}` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kubectl prints UTF-8");
    let objects = split_stream(&text).unwrap_or_else(|err| panic!("{dir}: {err}"));
    Render {
        dir: dir.to_owned(),
        objects,
    }
}

/// Every kustomization directory, rendered.
pub fn render_all() -> Vec<Render> {
    kustomization_dirs().iter().map(|dir| render(dir)).collect()
}

/// Splits a YAML stream (`---`-separated documents) into JSON values, skipping empty
/// documents.
pub fn split_stream(text: &str) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|err| format!("document {index} is not valid YAML: {err}"))?;
        match value {
            Value::Null => {}
            Value::Object(_) => objects.push(value),
            other => return Err(format!("document {index} is not an object: {other}")),
        }
    }
    Ok(objects)
}

/// The text of `key` in the ConfigMap generated as `name` (kustomize appends a content
/// hash, `name-<hash>`) in `render`.
///
/// # Panics
///
/// If the render has no such ConfigMap, or it has no such key.
pub fn config_map_file(render: &Render, name: &str, key: &str) -> String {
    let config_map = render
        .of_kind("ConfigMap")
        .find(|object| {
            object["metadata"]["name"]
                .as_str()
                .is_some_and(|generated| is_generated_name(generated, name))
        })
        .unwrap_or_else(|| panic!("{}: no ConfigMap generated as {name}", render.dir));
    config_map["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{}: ConfigMap {name} has no data key {key}", render.dir))
        .to_owned()
}

/// The name of the agent's generated ConfigMap and its file (`deploy/agent`).
pub const AGENT_CONFIG_MAP: (&str, &str) = ("fluxgate-agent-config", "agent.yaml");

/// The name of the broker's generated ConfigMap and its file (`deploy/broker/base`).
pub const BROKER_CONFIG_MAP: (&str, &str) = ("fluxgate-config", "fluxgate.toml");

/// A configuration file the manifests carry, and where.
#[derive(Debug, Clone)]
pub struct CarriedFile {
    /// The render and object it comes from, for messages.
    pub origin: String,
    pub text: String,
}

/// Every `agent.yaml` under `deploy/`: in each render's generated ConfigMap, and in each
/// Flux Kustomization's patch that replaces it (`deploy/flux`). The agent's tests parse
/// each with the agent's own loader.
pub fn agent_config_files() -> Vec<CarriedFile> {
    carried_files(AGENT_CONFIG_MAP)
}

/// Every `fluxgate.toml` under `deploy/`, as [`agent_config_files`] for the broker.
pub fn broker_config_files() -> Vec<CarriedFile> {
    carried_files(BROKER_CONFIG_MAP)
}

fn carried_files((name, key): (&str, &str)) -> Vec<CarriedFile> {
    let mut files = Vec::new();
    for render in render_all() {
        for object in render.of_kind("ConfigMap") {
            let object_name = object["metadata"]["name"].as_str().unwrap_or_default();
            if is_generated_name(object_name, name)
                && let Some(text) = object["data"][key].as_str()
            {
                files.push(CarriedFile {
                    origin: format!("{}: ConfigMap {object_name}", render.dir),
                    text: text.to_owned(),
                });
            }
        }
        for kustomization in render.of_kind("Kustomization") {
            for (index, patch) in flux_patches(kustomization).iter().enumerate() {
                if patch["kind"] == "ConfigMap"
                    && patch["metadata"]["name"] == name
                    && let Some(text) = patch["data"][key].as_str()
                {
                    files.push(CarriedFile {
                        origin: format!(
                            "{}: Kustomization {} spec.patches[{index}]",
                            render.dir, kustomization["metadata"]["name"]
                        ),
                        text: text.to_owned(),
                    });
                }
            }
        }
    }
    files
}

/// The inline patches of a Flux Kustomization, parsed (a patch that is not one YAML object,
/// such as a JSON 6902 list, comes back as it parses).
pub fn flux_patches(kustomization: &Value) -> Vec<Value> {
    kustomization["spec"]["patches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|patch| patch["patch"].as_str())
        .map(|text| {
            serde_yaml_ng::from_str(text)
                .unwrap_or_else(|err| panic!("a Flux patch is not YAML: {err}\n{text}"))
        })
        .collect()
}

/// Whether `generated` is `name` or `name-<hash>` (kustomize's generator suffix: ten
/// lowercase letters and digits).
pub fn is_generated_name(generated: &str, name: &str) -> bool {
    generated == name
        || generated
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|hash| {
                hash.len() == 10
                    && hash
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_splits_into_objects_and_skips_empty_documents() {
        let objects = split_stream("---\na: 1\n---\n---\nb: [x]\n").unwrap();
        assert_eq!(
            objects,
            vec![serde_json::json!({"a": 1}), serde_json::json!({"b": ["x"]})]
        );
        assert!(split_stream("- not an object\n").is_err());
    }

    #[test]
    fn generated_names_carry_a_ten_character_hash() {
        assert!(is_generated_name("agent-config-h98bc9c7k8", "agent-config"));
        assert!(is_generated_name("agent-config", "agent-config"));
        assert!(!is_generated_name("agent-config-extra", "agent-config"));
        assert!(!is_generated_name("agent-configh98bc9c7k8", "agent-config"));
    }
}

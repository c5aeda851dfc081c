//! The kubeconfig file a client needs to reach the stand-in: one cluster, one user with a
//! bearer token, one context named `standin`, selected as the current context.

use std::path::{Path, PathBuf};

use serde_json::json;

/// The context name in the written kubeconfig.
pub const CONTEXT: &str = "standin";

/// Writes `<dir>/kubeconfig` (JSON, which is valid YAML) and returns its path.
///
/// # Panics
/// If the file cannot be written.
pub fn write(dir: &Path, server_url: &str, token: &str) -> PathBuf {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server_url}}],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"}}],
        "current-context": CONTEXT,
        "preferences": {},
    });
    let path = dir.join("kubeconfig");
    let text = serde_json::to_string_pretty(&config).expect("JSON values serialise");
    std::fs::write(&path, text).expect("write the kubeconfig");
    path
}

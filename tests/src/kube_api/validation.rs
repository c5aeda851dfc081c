//! What the API server refuses with `422 Invalid`: object names, label syntax, Secret
//! data, and the schema rules of the Flux CRDs and of `Lease` that the agent can trip on.
//! Defaulting (Receiver `spec.interval`) and `stringData` folding also live here, as they
//! happen in the same admission step.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::resources::ResourceType;
use super::status::{ApiError, Cause};

/// Receiver `spec.type` values (notification-controller v1.9.3).
const RECEIVER_TYPES: &[&str] = &[
    "generic",
    "generic-hmac",
    "generic-oidc",
    "github",
    "gitlab",
    "bitbucket",
    "harbor",
    "dockerhub",
    "quay",
    "gcr",
    "nexus",
    "acr",
    "cdevents",
];

/// `CrossNamespaceObjectReference.kind` values.
const RECEIVER_RESOURCE_KINDS: &[&str] = &[
    "Bucket",
    "GitRepository",
    "Kustomization",
    "HelmRelease",
    "HelmChart",
    "HelmRepository",
    "ImageRepository",
    "ImagePolicy",
    "ImageUpdateAutomation",
    "OCIRepository",
    "ArtifactGenerator",
    "ExternalArtifact",
];

/// Applies the server's defaults and folds Secret `stringData` into `data`.
pub fn default_object(resource: &ResourceType, object: &mut Value) {
    if resource.kind == "Secret" {
        if let Some(Value::Object(string_data)) =
            object.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            let data = object
                .as_object_mut()
                .expect("object checked above")
                .entry("data")
                .or_insert_with(|| json!({}));
            if let Some(data) = data.as_object_mut() {
                for (key, value) in string_data {
                    let text = value.as_str().unwrap_or_default();
                    data.insert(key, Value::String(BASE64.encode(text)));
                }
            }
        }
        if object.get("type").is_none() {
            object["type"] = json!("Opaque");
        }
    }
    if resource.kind == "Receiver"
        && object["spec"].is_object()
        && object["spec"].get("interval").is_none()
    {
        object["spec"]["interval"] = json!("10m");
    }
}

/// Every problem with `object`, or `Ok` if the API server would store it.
pub fn validate(resource: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    check_metadata(resource, object, &mut causes);
    match resource.kind {
        "Secret" => check_secret(object, &mut causes),
        "Receiver" => check_receiver(&object["spec"], &mut causes),
        "GitRepository" => check_source(
            &object["spec"],
            "^(http|https|ssh)://.*$",
            &["http://", "https://", "ssh://"],
            &mut causes,
        ),
        "OCIRepository" => check_source(&object["spec"], "^oci://.*$", &["oci://"], &mut causes),
        "Kustomization" => check_kustomization(&object["spec"], &mut causes),
        "Lease" => check_lease(&object["spec"], &mut causes),
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&resource.qualified_name(), name, causes))
    }
}

fn required(field: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.to_owned(),
        message: "Required value".to_owned(),
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.to_owned(),
        message: message.into(),
    }
}

fn not_supported(field: &str, value: &str, allowed: &[&str]) -> Cause {
    Cause {
        reason: "FieldValueNotSupported",
        field: field.to_owned(),
        message: format!("Unsupported value: {value:?}: supported values: {allowed:?}"),
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// `[a-z0-9]([-a-z0-9.]*[a-z0-9])?`, at most 253 characters (DNS-1123 subdomain).
pub fn is_dns1123_subdomain(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// A label value or key name: at most 63 of `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_part(text: &str, allow_empty: bool) -> bool {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return allow_empty;
    }
    bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// `[prefix/]name`, the prefix a DNS-1123 subdomain.
fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_part(name, false),
        None => is_qualified_part(key, false),
    }
}

fn check_metadata(resource: &ResourceType, object: &Value, causes: &mut Vec<Cause>) {
    let metadata = &object["metadata"];
    match metadata["name"].as_str() {
        None | Some("") => causes.push(required("metadata.name")),
        Some(name) if !is_dns1123_subdomain(name) => causes.push(invalid(
            "metadata.name",
            format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        )),
        Some(_) => {}
    }
    if resource.namespaced
        && let Some(namespace) = metadata["namespace"].as_str()
        && !is_dns1123_label(namespace)
    {
        causes.push(invalid(
            "metadata.namespace",
            format!("Invalid value: {namespace:?}"),
        ));
    }
    if let Some(labels) = metadata["labels"].as_object() {
        for (key, value) in labels {
            if !is_qualified_name(key) {
                causes.push(invalid("metadata.labels", format!("Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.'")));
            }
            match value.as_str() {
                Some(text) if is_qualified_part(text, true) => {}
                _ => causes.push(invalid("metadata.labels", format!("Invalid value: {value}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', at most 63 characters"))),
            }
        }
    }
    if let Some(annotations) = metadata["annotations"].as_object() {
        for (key, value) in annotations {
            if !is_qualified_name(key) {
                causes.push(invalid(
                    "metadata.annotations",
                    format!("Invalid value: {key:?}"),
                ));
            }
            if !value.is_string() {
                causes.push(invalid(
                    "metadata.annotations",
                    format!("Invalid value: {value}: must be a string"),
                ));
            }
        }
    }
}

fn check_secret(object: &Value, causes: &mut Vec<Cause>) {
    let Some(data) = object.get("data") else {
        return;
    };
    let Some(data) = data.as_object() else {
        causes.push(invalid("data", "must be a map of base64 strings"));
        return;
    };
    for (key, value) in data {
        let decodes = value.as_str().is_some_and(|v| BASE64.decode(v).is_ok());
        if !decodes {
            causes.push(invalid(&format!("data[{key}]"), "illegal base64 data"));
        }
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            causes.push(invalid(
                &format!("data[{key}]"),
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
    }
}

/// `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
pub fn is_flux_duration(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return false;
            }
            rest = &fraction[digits..];
        }
        rest = if let Some(r) = rest.strip_prefix("ms") {
            r
        } else if let Some(r) = rest.strip_prefix(['s', 'm', 'h']) {
            r
        } else {
            return false;
        };
    }
    true
}

fn check_interval(spec: &Value, required_field: bool, causes: &mut Vec<Cause>) {
    match spec.get("interval") {
        None if required_field => causes.push(required("spec.interval")),
        None => {}
        Some(Value::String(interval)) if is_flux_duration(interval) => {}
        Some(other) => causes.push(invalid(
            "spec.interval",
            format!("Invalid value: {other}: spec.interval in body should match '^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$'"),
        )),
    }
}

fn check_receiver(spec: &Value, causes: &mut Vec<Cause>) {
    if !spec.is_object() {
        causes.push(required("spec"));
        return;
    }
    let receiver_type = spec["type"].as_str();
    match receiver_type {
        None => causes.push(required("spec.type")),
        Some(t) if !RECEIVER_TYPES.contains(&t) => {
            causes.push(not_supported("spec.type", t, RECEIVER_TYPES))
        }
        Some(_) => {}
    }
    check_interval(spec, false, causes);
    match spec.get("resources").map(Value::as_array) {
        None => causes.push(required("spec.resources")),
        Some(None) => causes.push(invalid("spec.resources", "must be a list")),
        Some(Some(resources)) => {
            for (index, resource) in resources.iter().enumerate() {
                let field = |f: &str| format!("spec.resources[{index}].{f}");
                match resource["kind"].as_str() {
                    None => causes.push(required(&field("kind"))),
                    Some(kind) if !RECEIVER_RESOURCE_KINDS.contains(&kind) => {
                        causes.push(not_supported(&field("kind"), kind, RECEIVER_RESOURCE_KINDS));
                    }
                    Some(_) => {}
                }
                match resource["name"].as_str() {
                    None => causes.push(required(&field("name"))),
                    Some(name) if name.is_empty() || name.len() > 253 => {
                        causes.push(invalid(&field("name"), "must be 1 to 253 characters"));
                    }
                    Some(name) => {
                        if resource.get("matchLabels").is_some() && name != "*" {
                            causes.push(invalid(&field("name"), "matchLabels requires name '*'"));
                        }
                    }
                }
            }
        }
    }
    let secret_ref = spec.get("secretRef");
    if receiver_type == Some("generic-oidc") {
        if secret_ref.is_some() {
            causes.push(invalid(
                "spec.secretRef",
                "secretRef is not allowed for generic-oidc",
            ));
        }
    } else {
        match secret_ref {
            None => causes.push(required("spec.secretRef")),
            Some(secret_ref) if secret_ref["name"].as_str().is_none_or(str::is_empty) => {
                causes.push(required("spec.secretRef.name"));
            }
            Some(_) => {}
        }
    }
}

fn check_source(spec: &Value, pattern: &str, schemes: &[&str], causes: &mut Vec<Cause>) {
    if !spec.is_object() {
        causes.push(required("spec"));
        return;
    }
    match spec["url"].as_str() {
        None => causes.push(required("spec.url")),
        Some(url) if !schemes.iter().any(|s| url.starts_with(s)) => causes.push(invalid(
            "spec.url",
            format!("Invalid value: {url:?}: spec.url in body should match '{pattern}'"),
        )),
        Some(_) => {}
    }
    check_interval(spec, true, causes);
}

fn check_kustomization(spec: &Value, causes: &mut Vec<Cause>) {
    if !spec.is_object() {
        causes.push(required("spec"));
        return;
    }
    check_interval(spec, true, causes);
    if spec["sourceRef"]["kind"].as_str().is_none() {
        causes.push(required("spec.sourceRef.kind"));
    }
    if spec["sourceRef"]["name"].as_str().is_none() {
        causes.push(required("spec.sourceRef.name"));
    }
}

fn check_lease(spec: &Value, causes: &mut Vec<Cause>) {
    let Some(spec) = spec.as_object() else {
        return;
    };
    let check = |field: &str, ok: fn(&Value) -> bool, what: &str, causes: &mut Vec<Cause>| {
        if let Some(value) = spec.get(field)
            && !value.is_null()
            && !ok(value)
        {
            causes.push(invalid(
                &format!("spec.{field}"),
                format!("Invalid value: {value}: must be {what}"),
            ));
        }
    };
    let is_int32 = |v: &Value| v.as_i64().is_some_and(|n| i32::try_from(n).is_ok());
    check("holderIdentity", Value::is_string, "a string", causes);
    check("leaseDurationSeconds", is_int32, "an int32", causes);
    check("leaseTransitions", is_int32, "an int32", causes);
    check("acquireTime", is_micro_time, "an RFC 3339 time", causes);
    check("renewTime", is_micro_time, "an RFC 3339 time", causes);
    check("strategy", Value::is_string, "a string", causes);
    check("preferredHolder", Value::is_string, "a string", causes);
    if let Some(duration) = spec.get("leaseDurationSeconds").and_then(Value::as_i64)
        && duration <= 0
    {
        causes.push(invalid(
            "spec.leaseDurationSeconds",
            "must be greater than 0",
        ));
    }
}

fn is_micro_time(value: &Value) -> bool {
    value.as_str().is_some_and(|t| {
        humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).is_ok()
            || humantime::parse_rfc3339(t).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_durations_follow_the_api_patterns() {
        assert!(is_dns1123_subdomain("gitlab-receiver.a"));
        assert!(!is_dns1123_subdomain("Upper"));
        assert!(!is_dns1123_subdomain("-x"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_flux_duration("10m"));
        assert!(is_flux_duration("1h30m0.5s"));
        assert!(is_flux_duration("250ms"));
        assert!(!is_flux_duration("10"));
        assert!(!is_flux_duration("m"));
        assert!(!is_flux_duration("1d"));
    }
}

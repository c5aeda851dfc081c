//! The `tls:` section: how the agent trusts the broker and proves who it is.
//!
//! ```yaml
//! tls:
//!   ca_file: /etc/fluxgate/ca.crt      # trust only these CAs (PEM) instead of the system roots
//!   cert_file: /etc/fluxgate/tls.crt   # a client certificate (PEM chain), for brokers that
//!   key_file: /etc/fluxgate/tls.key    # ... require one (agent_tls_client_ca_file); with its key
//!   server_name: fluxgate.example.com  # check the broker's certificate for this name (and send it
//!                                      # as SNI) instead of the host in the broker URL
//! ```
//!
//! Every file is read and parsed when the configuration loads, so a wrong path or a file
//! that holds no certificate fails the start with the key's name. TLS is used for
//! `https://` broker addresses; setting `tls:` with an `http://` address is an error.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;

use super::{ConfigError, read_secret_file};

/// The section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct TlsSection {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

impl TlsSection {
    fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.server_name.is_some()
    }
}

/// TLS settings for `https://` brokers, with the files read.
#[derive(Clone, Default)]
pub struct BrokerTls {
    /// PEM CA certificates to trust instead of the system roots.
    pub ca_pem: Option<String>,
    /// PEM certificate chain and key presented to the broker.
    pub identity: Option<ClientIdentity>,
    /// The name the broker's certificate must be valid for.
    pub server_name: Option<String>,
}

/// A client certificate and its key (the key is never printed).
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerTls")
            .field("ca_file", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Reads and checks the section; `brokers` are the validated broker addresses.
pub(super) fn validate(
    section: TlsSection,
    brokers: &[String],
    base_dir: &Path,
) -> Result<BrokerTls, ConfigError> {
    if section.is_set()
        && let Some(plain) = brokers.iter().find(|b| !b.starts_with("https://"))
    {
        return Err(ConfigError::invalid(
            "tls",
            format!("is set, but broker {plain:?} is not an https:// address"),
        ));
    }
    let ca_pem = section
        .ca_file
        .as_deref()
        .map(|path| {
            let pem = read_secret_file("tls.ca_file", base_dir, path)?;
            certificates("tls.ca_file", &pem)?;
            Ok::<_, ConfigError>(pem)
        })
        .transpose()?;
    let identity = match (section.cert_file.as_deref(), section.key_file.as_deref()) {
        (Some(cert), Some(key)) => {
            let cert_pem = read_secret_file("tls.cert_file", base_dir, cert)?;
            certificates("tls.cert_file", &cert_pem)?;
            let key_pem = read_secret_file("tls.key_file", base_dir, key)?;
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
                ConfigError::invalid("tls.key_file", format!("no PEM private key: {e}"))
            })?;
            Some(ClientIdentity { cert_pem, key_pem })
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "tls.key_file",
                "is required with tls.cert_file",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                "tls.cert_file",
                "is required with tls.key_file",
            ));
        }
    };
    let server_name = section
        .server_name
        .map(|name| {
            let name = name.trim().to_owned();
            ServerName::try_from(name.as_str())
                .map_err(|e| ConfigError::invalid("tls.server_name", format!("{name:?}: {e}")))?;
            Ok::<_, ConfigError>(name)
        })
        .transpose()?;
    Ok(BrokerTls {
        ca_pem,
        identity,
        server_name,
    })
}

fn certificates(field: &str, pem: &str) -> Result<(), ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::invalid(field, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::invalid(
            field,
            "holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::AgentConfig;
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == super::super::DEFAULT_TOKEN_ENV).then(|| "fgat_from_env".to_owned())
    }

    /// A directory with `ca.crt`, `tls.crt`, `tls.key` and `empty.crt`.
    fn pem_files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca".to_owned()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["agent".to_owned()]).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert.pem()).unwrap();
        std::fs::write(dir.path().join("tls.crt"), client.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("tls.key"),
            client.signing_key.serialize_pem(),
        )
        .unwrap();
        std::fs::write(dir.path().join("empty.crt"), "no pem here\n").unwrap();
        dir
    }

    fn parse(dir: &Path, broker: &str, tls: &str) -> Result<AgentConfig, ConfigError> {
        let yaml = format!(
            "broker: {broker}\ntls:\n{tls}\nreceivers:\n  - name: r\n    project: g/a\n    \
             type: generic\n    token: t\n"
        );
        AgentConfig::from_yaml(&yaml, dir, &env)
    }

    fn error(dir: &Path, broker: &str, tls: &str) -> String {
        match parse(dir, broker, tls) {
            Ok(config) => panic!("expected an error, got {:?}", config.tls),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_full_section_is_read_relative_to_the_config_file() {
        let dir = pem_files();
        let config = parse(
            dir.path(),
            "https://broker:8150",
            "  ca_file: ca.crt\n  cert_file: tls.crt\n  key_file: tls.key\n  \
             server_name: fluxgate.example.com",
        )
        .unwrap();
        let tls = config.tls;
        assert!(tls.ca_pem.unwrap().contains("BEGIN CERTIFICATE"));
        let identity = tls.identity.unwrap();
        assert!(identity.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(identity.key_pem.contains("PRIVATE KEY"));
        assert_eq!(tls.server_name.as_deref(), Some("fluxgate.example.com"));
    }

    #[test]
    fn without_the_section_https_uses_the_system_roots() {
        let dir = pem_files();
        let yaml = "broker: https://broker:8150\nreceivers:\n  - name: r\n    project: g/a\n    \
                    type: generic\n    token: t\n";
        let config = AgentConfig::from_yaml(yaml, dir.path(), &env).unwrap();
        assert!(config.tls.ca_pem.is_none());
        assert!(config.tls.identity.is_none());
    }

    #[test]
    fn mistakes_are_reported_with_the_key() {
        let dir = pem_files();
        let dir = dir.path();
        let https = "https://broker:8150";
        let cases = [
            (
                "http://broker:8150",
                "  ca_file: ca.crt",
                "is not an https:// address",
            ),
            (https, "  cert_file: tls.crt", "tls.key_file: is required"),
            (https, "  key_file: tls.key", "tls.cert_file: is required"),
            (
                https,
                "  ca_file: empty.crt",
                "tls.ca_file: holds no certificate",
            ),
            (https, "  ca_file: missing.crt", "tls.ca_file: cannot read"),
            (
                https,
                "  cert_file: tls.crt\n  key_file: ca.crt",
                "tls.key_file: no PEM private key",
            ),
            (https, "  server_name: \"not a name\"", "tls.server_name"),
            (https, "  ca_fil: ca.crt", "unknown field"),
        ];
        for (broker, tls, expected) in cases {
            let message = error(dir, broker, tls);
            assert!(message.contains(expected), "{tls}: {message}");
        }
    }
}

//! TLS for one listener: rustls (ring provider) from PEM files, reloaded when they change.
//!
//! The files are read again every `tls_reload_interval` and compared by content (so a
//! Kubernetes Secret volume's symlink swap or cert-manager's rewrite is noticed whatever
//! the modification times say). A changed set that does not load (a key that does not
//! match the certificate, a half-written file) leaves the previous configuration in use
//! and logs an error; the next change is tried again. Every handshake takes the current
//! configuration, so a new certificate is served from the next connection on, without a
//! restart; open connections keep the one they were made with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The PEM files of one listener. `listener` names its configuration keys in errors
/// (`<listener>_tls_cert_file`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub listener: &'static str,
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files of a listener from its optional keys: none set is no TLS; a certificate
    /// without a key (or the reverse), or a client CA without a certificate, is an error.
    pub fn from_keys(
        listener: &'static str,
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
    ) -> anyhow::Result<Option<Self>> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self {
                listener,
                cert: cert.to_owned(),
                key: key.to_owned(),
                client_ca: client_ca.map(Path::to_owned),
            })),
            (None, None) if client_ca.is_some() => bail!(
                "{listener}_tls_client_ca_file is set but {listener}_tls_cert_file is not: \
                 client certificates can only be checked on a TLS listener"
            ),
            (None, None) => Ok(None),
            (Some(_), None) => bail!(
                "{listener}_tls_cert_file is set but {listener}_tls_key_file is not; set both"
            ),
            (None, Some(_)) => bail!(
                "{listener}_tls_key_file is set but {listener}_tls_cert_file is not; set both"
            ),
        }
    }
}

/// The bytes of the files, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// A listener's current TLS configuration, kept up to date with its files.
#[derive(Clone)]
pub struct ReloadingTls {
    current: watch::Receiver<Arc<ServerConfig>>,
}

impl ReloadingTls {
    /// Loads the files now (an error here stops the broker from starting) and re-reads them
    /// every `interval` until `shutdown`. `alpn` lists the protocols offered, preferred
    /// first.
    pub fn start(
        files: TlsFiles,
        alpn: &[&[u8]],
        interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let (tls, mut watcher) = Self::load(files, alpn)?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                watcher.check();
            }
        });
        Ok(tls)
    }

    /// Loads the files; the [`Watcher`] applies later changes when asked.
    pub(super) fn load(files: TlsFiles, alpn: &[&[u8]]) -> anyhow::Result<(Self, Watcher)> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let contents = read(&files)?;
        let config = build(&files, &contents, &alpn)?;
        tracing::info!(
            listener = files.listener,
            cert_file = %files.cert.display(),
            certificate = %fingerprint(&contents.cert),
            client_certificates = files.client_ca.is_some(),
            "TLS enabled"
        );
        let (sender, current) = watch::channel(Arc::new(config));
        let watcher = Watcher {
            files,
            alpn,
            last: contents,
            last_read_error: None,
            sender,
        };
        Ok((Self { current }, watcher))
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.borrow().clone())
    }
}

/// What one look at the files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Check {
    Unchanged,
    Reloaded,
    /// The files could not be read or did not load; the previous configuration stays.
    Kept(String),
}

/// Re-reads a listener's files and swaps its configuration when they changed and load.
pub(super) struct Watcher {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    /// The contents last tried (a set that failed is not tried again until it changes).
    last: Contents,
    /// The last read error logged (logged again only when it changes).
    last_read_error: Option<String>,
    sender: watch::Sender<Arc<ServerConfig>>,
}

impl Watcher {
    pub(super) fn check(&mut self) -> Check {
        let listener = self.files.listener;
        let contents = match read(&self.files) {
            Ok(contents) => {
                self.last_read_error = None;
                contents
            }
            Err(error) => {
                let message = format!("{error:#}");
                if self.last_read_error.as_ref() != Some(&message) {
                    tracing::error!(
                        listener,
                        error = %message,
                        "cannot read the TLS files; keeping the certificate in use"
                    );
                    self.last_read_error = Some(message.clone());
                }
                return Check::Kept(message);
            }
        };
        if contents == self.last {
            return Check::Unchanged;
        }
        let outcome = match build(&self.files, &contents, &self.alpn) {
            Ok(config) => {
                self.sender.send_replace(Arc::new(config));
                tracing::info!(
                    listener,
                    certificate = %fingerprint(&contents.cert),
                    "TLS certificate reloaded"
                );
                Check::Reloaded
            }
            Err(error) => {
                let message = format!("{error:#}");
                tracing::error!(
                    listener,
                    error = %message,
                    "the new TLS files do not load; keeping the certificate in use"
                );
                Check::Kept(message)
            }
        };
        self.last = contents;
        outcome
    }
}

/// The first 16 hex digits of the SHA-256 of the leaf certificate, to tell them apart in
/// logs (`openssl x509 -fingerprint -sha256` shows the same digits).
fn fingerprint(cert_pem: &[u8]) -> String {
    CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .and_then(Result::ok)
        .map(|leaf| hex::encode(&Sha256::digest(leaf.as_ref())[..8]))
        .unwrap_or_default()
}

/// Largest PEM file read (a chain with a few certificates is a few KiB).
const MAX_PEM_FILE: u64 = 1024 * 1024;

fn read(files: &TlsFiles) -> anyhow::Result<Contents> {
    let listener = files.listener;
    Ok(Contents {
        cert: read_pem(&format!("{listener}_tls_cert_file"), &files.cert)?,
        key: read_pem(&format!("{listener}_tls_key_file"), &files.key)?,
        client_ca: files
            .client_ca
            .as_deref()
            .map(|path| read_pem(&format!("{listener}_tls_client_ca_file"), path))
            .transpose()?,
    })
}

fn read_pem(key: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{key}: cannot read {}", path.display()))?
        .len();
    if size > MAX_PEM_FILE {
        bail!(
            "{key}: {} is {size} bytes, more than a PEM file of {MAX_PEM_FILE} bytes at most",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("{key}: cannot read {}", path.display()))
}

fn build(files: &TlsFiles, contents: &Contents, alpn: &[Vec<u8>]) -> anyhow::Result<ServerConfig> {
    let listener = files.listener;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&format!("{listener}_tls_cert_file"), &contents.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|e| {
        anyhow!(
            "{listener}_tls_key_file: no private key in {}: {e}",
            files.key.display()
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key, &provider).with_context(|| {
        format!(
            "{listener}_tls_key_file: the key in {} does not go with the certificate in {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("rustls rejects its own default protocol versions")?;
    let builder = match &contents.client_ca {
        Some(pem) => {
            let key = format!("{listener}_tls_client_ca_file");
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(&key, pem)? {
                roots
                    .add(ca)
                    .with_context(|| format!("{key}: a CA certificate is not usable"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("{key}: cannot verify clients with these CAs"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCert(Arc::new(certified))));
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// Serves one certificate to every client (whatever name it asks for).
#[derive(Debug)]
struct SingleCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for SingleCert {
    fn resolve(&self, _client_hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn certificates(key: &str, pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{key}: not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        bail!("{key}: no certificate in the file (expected PEM `BEGIN CERTIFICATE` blocks)");
    }
    Ok(certs)
}

//! The running stand-in: binds `127.0.0.1:0`, serves the API until dropped, and writes the
//! kubeconfig that points a client at it.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::cluster::Cluster;
use super::store::State;
use super::{Options, Shared, kubeconfig, server};

/// A Kubernetes API server stand-in. Dereferences to [`Cluster`] for direct access.
pub struct KubeApiStandIn {
    cluster: Cluster,
    server: JoinHandle<()>,
}

impl KubeApiStandIn {
    /// Starts with the default [`Options`] (bookmarks every second).
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// Starts on a free port of `127.0.0.1`.
    ///
    /// # Panics
    /// If the listener cannot be bound.
    pub async fn start_with(options: Options) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Kubernetes API stand-in");
        let address = listener.local_addr().expect("listener has an address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(options.history_limit)),
            token: format!("standin-{}", uuid::Uuid::new_v4().simple()),
            options,
            address,
            http: reqwest::Client::new(),
        });
        let app = Router::new()
            .fallback(server::handle)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            // Only an I/O error on the listener ends the server; clients then see refused
            // connections.
            let _ = axum::serve(listener, app).await;
        });
        Self {
            cluster: Cluster::new(shared),
            server,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.cluster.shared().address)
    }

    /// The bearer token every request must carry.
    pub fn token(&self) -> &str {
        &self.cluster.shared().token
    }

    /// Writes `<dir>/kubeconfig` with this server, its token and the context `standin`.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        kubeconfig::write(dir, &self.url(), self.token())
    }

    /// A handle on the state that outlives nothing: it works while the stand-in runs.
    pub fn cluster(&self) -> Cluster {
        self.cluster.clone()
    }
}

impl Deref for KubeApiStandIn {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for KubeApiStandIn {
    fn drop(&mut self) {
        self.cluster.end_all_watches();
        self.server.abort();
    }
}

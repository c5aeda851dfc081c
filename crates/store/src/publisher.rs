//! The one way onto the bus: every write that adds entries to the log goes through a
//! [`Publisher`], which tells its [`CommitListener`] about the new entries right after
//! their commit, in seq order.
//!
//! Two kinds of write produce log entries: hooks (group-committed by the [`Appender`] the
//! publisher spawns) and agent changes (create, update, delete). Other writes (cursors,
//! retention, receiver health) add no entries and need no publishing.
//!
//! Where the entries go depends on the listener this process has:
//! - a broker's bus (in-process or Redis): its own follower applies them at once and, with
//!   Redis, the other replicas too;
//! - the CLI with Redis configured: a Redis bus that only publishes, so running brokers
//!   apply the change as soon as they read it;
//! - the CLI without Redis: [`NoListener`](crate::NoListener). A separate process's
//!   writes then reach running brokers only through their followers' poll of the store,
//!   within `poll_interval`: that poll is the only path between processes that share no
//!   bus.

use std::sync::Arc;

use fluxgate_core::{AgentName, LogEntry};
use tokio::task::JoinHandle;

use crate::api::Store;
use crate::appender::{Appender, CommitListener};
use crate::error::StoreError;
use crate::model::{AgentRecord, AgentUpdate, NewAgent};

/// The store and the listener told about every entry a write through here commits.
/// Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    store: Arc<dyn Store>,
    listener: Arc<dyn CommitListener>,
}

impl Publisher {
    pub fn new(store: Arc<dyn Store>, listener: Arc<dyn CommitListener>) -> Self {
        Self { store, listener }
    }

    /// The store, for reads and for writes that add no log entries.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Starts the group-commit writer for hooks; it publishes each batch it commits
    /// before answering its callers (see [`Appender`]).
    pub fn spawn_appender(&self, max_batch: usize) -> (Appender, JoinHandle<()>) {
        Appender::spawn(self.store.clone(), self.listener.clone(), max_batch)
    }

    /// Creates an agent and publishes the state change that records it.
    pub async fn create_agent(&self, agent: NewAgent) -> Result<AgentRecord, StoreError> {
        let (record, entry) = self.store.create_agent(agent).await?;
        self.publish(entry);
        Ok(record)
    }

    /// Changes an agent and publishes the state change that records it.
    pub async fn update_agent(
        &self,
        name: &AgentName,
        update: AgentUpdate,
    ) -> Result<AgentRecord, StoreError> {
        let (record, entry) = self.store.update_agent(name, update).await?;
        self.publish(entry);
        Ok(record)
    }

    /// Deletes an agent and publishes the state change that records it.
    pub async fn delete_agent(&self, name: &AgentName) -> Result<(), StoreError> {
        let entry = self.store.delete_agent(name).await?;
        self.publish(entry);
        Ok(())
    }

    fn publish(&self, entry: LogEntry) {
        self.listener.committed(std::slice::from_ref(&entry));
    }
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use parking_lot::Mutex;

    use fluxgate_core::{AgentToken, FullPath, Seq};

    use super::*;
    use crate::testing::TestDatabase;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Seq>>);

    impl CommitListener for Recorder {
        fn committed(&self, entries: &[LogEntry]) {
            self.0.lock().extend(entries.iter().map(|e| e.seq));
        }
    }

    #[tokio::test]
    async fn every_agent_change_is_published_once_in_seq_order() {
        let db = TestDatabase::sqlite();
        let store = db.store().await;
        store.migrate().await.unwrap();
        let recorder = Arc::new(Recorder::default());
        let log = Publisher::new(Arc::new(store), recorder.clone());
        let name = AgentName::parse("edge").unwrap();
        log.create_agent(NewAgent {
            name: name.clone(),
            config_project: FullPath::parse("ops/edge").unwrap(),
            grants: Vec::new(),
            allow_internal: false,
            token_digest: AgentToken::generate().digest(),
        })
        .await
        .unwrap();
        log.update_agent(
            &name,
            AgentUpdate::RotateToken {
                digest: AgentToken::generate().digest(),
            },
        )
        .await
        .unwrap();
        log.delete_agent(&name).await.unwrap();
        let head = log.store().log_bounds().await.unwrap().head;
        let published: Vec<u64> = recorder.0.lock().iter().map(|s| s.get()).collect();
        assert_eq!(published, vec![1, 2, 3]);
        assert_eq!(
            head.get(),
            3,
            "each change is one entry, and all were published"
        );
    }
}

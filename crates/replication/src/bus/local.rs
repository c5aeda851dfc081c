//! The in-process bus: one replica, no network.

use std::sync::Arc;

use fluxgate_core::LogEntry;
use fluxgate_store::CommitListener;
use tokio::sync::broadcast;

use super::{Batch, Bus};

/// A broadcast channel inside the process. A follower that lags more than `capacity`
/// batches is told so and reads the gap from the store.
pub struct InProcessBus {
    sender: broadcast::Sender<Batch>,
}

impl InProcessBus {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }
}

impl CommitListener for InProcessBus {
    fn committed(&self, entries: &[LogEntry]) {
        // No receiver yet is fine: followers start from the store.
        let _ = self.sender.send(Arc::new(entries.to_vec()));
    }
}

impl Bus for InProcessBus {
    fn subscribe(&self) -> broadcast::Receiver<Batch> {
        self.sender.subscribe()
    }
}

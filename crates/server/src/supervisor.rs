//! Supervision of the broker's essential tasks.
//!
//! Every task the broker cannot work without (the log writer, the follower, the servers,
//! the cursor saver, retention, the bus, the readiness check) runs here under a name. Until
//! shutdown none of them may end: one that returns or panics is a failure. The broker then
//! reports not ready at once, drains, and exits non-zero so that the orchestrator restarts
//! it — it is never "ready" while unable to work.
//!
//! During the drain, [`Supervisor::wait_for`] waits for one named task (the servers, then
//! the writer) while the others keep running.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;

use tokio::task::{JoinError, JoinSet};

/// How a supervised task ended.
#[derive(Debug)]
pub enum Ending {
    /// It returned `Ok(())`.
    Returned,
    /// It returned an error.
    Failed(anyhow::Error),
    /// It panicked; the panic's message.
    Panicked(String),
    /// It was aborted (only at the very end of shutdown).
    Cancelled,
}

/// A task that ended, and how.
#[derive(Debug)]
pub struct TaskExit {
    pub name: &'static str,
    pub ending: Ending,
}

impl fmt::Display for TaskExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ending {
            Ending::Returned => write!(f, "the {} stopped", self.name),
            Ending::Failed(err) => write!(f, "the {} failed: {err:#}", self.name),
            Ending::Panicked(message) => write!(f, "the {} panicked: {message}", self.name),
            Ending::Cancelled => write!(f, "the {} was cancelled", self.name),
        }
    }
}

/// The broker's essential tasks, by name.
#[derive(Default)]
pub struct Supervisor {
    tasks: JoinSet<anyhow::Result<()>>,
    names: HashMap<tokio::task::Id, &'static str>,
    aborts: HashMap<&'static str, tokio::task::AbortHandle>,
    ended: HashSet<&'static str>,
}

impl Supervisor {
    /// Runs `task` as the essential task `name`.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        #[cfg(debug_assertions)]
        let task = fault::inject(name, task);
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
        self.aborts.insert(name, handle);
    }

    /// Aborts the task `name` if it still runs (at the end of a shutdown whose grace
    /// period passed); it then ends as [`Ending::Cancelled`].
    pub fn abort(&mut self, name: &'static str) {
        if let Some(handle) = self.aborts.get(name) {
            handle.abort();
        }
    }

    /// Runs `task`, which ends only when it is told to stop, as the essential task `name`.
    pub fn spawn_until_stopped(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.spawn(name, async move {
            task.await;
            Ok(())
        });
    }

    /// Waits for the next task to end. `None` when none is left.
    pub async fn next_exit(&mut self) -> Option<TaskExit> {
        let joined = self.tasks.join_next_with_id().await?;
        let (id, ending) = match joined {
            Ok((id, Ok(()))) => (id, Ending::Returned),
            Ok((id, Err(err))) => (id, Ending::Failed(err)),
            Err(err) => (err.id(), ending_of(err)),
        };
        let name = self.names.remove(&id).unwrap_or("unnamed task");
        self.ended.insert(name);
        Some(TaskExit { name, ending })
    }

    /// During shutdown: waits until the task `name` has ended. Other tasks that end
    /// meanwhile are logged if they failed.
    pub async fn wait_for(&mut self, name: &'static str) {
        while !self.ended.contains(name) {
            match self.next_exit().await {
                Some(exit) => log_exit_during_drain(&exit),
                None => return,
            }
        }
    }

    /// During shutdown: waits for every task left.
    pub async fn wait_all(&mut self) {
        while let Some(exit) = self.next_exit().await {
            log_exit_during_drain(&exit);
        }
    }
}

/// Fault injection for the end-to-end tests, in debug builds only: with
/// `FLUXGATE_FAULT_PANIC="<task name>@<milliseconds>"`, that task panics after that long,
/// as a bug in it would. Release builds do not contain this.
#[cfg(debug_assertions)]
mod fault {
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    pub const VARIABLE: &str = "FLUXGATE_FAULT_PANIC";

    pub fn inject(
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
        let delay = std::env::var(VARIABLE).ok().and_then(|spec| {
            let (task, millis) = spec.rsplit_once('@')?;
            (task == name).then(|| millis.parse().ok().map(Duration::from_millis))?
        });
        match delay {
            None => Box::pin(task),
            Some(delay) => Box::pin(async move {
                tokio::select! {
                    result = task => result,
                    () = tokio::time::sleep(delay) => panic!("fault injected by {VARIABLE}"),
                }
            }),
        }
    }
}

fn ending_of(err: JoinError) -> Ending {
    if err.is_cancelled() {
        return Ending::Cancelled;
    }
    let panic = err.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    Ending::Panicked(message)
}

fn log_exit_during_drain(exit: &TaskExit) {
    match exit.ending {
        Ending::Returned | Ending::Cancelled => tracing::debug!(task = exit.name, "stopped"),
        Ending::Failed(_) | Ending::Panicked(_) => {
            tracing::error!(task = exit.name, "{exit} while shutting down");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_with_its_name_and_message() {
        let mut supervisor = Supervisor::default();
        supervisor.spawn_until_stopped("idle", std::future::pending());
        supervisor.spawn_until_stopped("writer", async { panic!("byte index 3 is out of bounds") });
        let exit = supervisor.next_exit().await.expect("a task ended");
        assert_eq!(exit.name, "writer");
        assert!(
            matches!(&exit.ending, Ending::Panicked(m) if m.contains("out of bounds")),
            "{exit}"
        );
        assert_eq!(
            exit.to_string(),
            "the writer panicked: byte index 3 is out of bounds"
        );
    }

    #[tokio::test]
    async fn wait_for_returns_once_the_named_task_ended() {
        let mut supervisor = Supervisor::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        supervisor.spawn_until_stopped("server", async {
            let _ = stopped.await;
        });
        supervisor.spawn("failing", async { Err(anyhow::anyhow!("boom")) });
        let waiting = tokio::spawn(async move {
            supervisor.wait_for("server").await;
            supervisor
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the server is still running");
        stop.send(()).unwrap();
        let mut supervisor = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("wait_for returned")
            .unwrap();
        assert!(supervisor.next_exit().await.is_none(), "both tasks ended");
    }
}

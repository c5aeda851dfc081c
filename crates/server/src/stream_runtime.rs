//! The runtime agent streams run on, apart from the one that answers hooks.
//!
//! One push to thousands of agents wakes thousands of stream tasks at once. On a shared
//! runtime a hook whose commit completes meanwhile waits in the same run queue behind all of
//! them, so its answer waited for the fan-out (hundreds of milliseconds at 10,000 streams).
//! With the agent listener, its connections and their sessions on a runtime of their own, the
//! operating system shares the cores between the two, and a hook is answered while a fan-out
//! is under way (docs/benchmarks.md, C).

use std::future::Future;

use tokio::runtime::{Builder, Runtime};

/// The agent streams' runtime; shut down without waiting when dropped (its tasks are
/// stopped by then, or are abandoned as the process exits).
pub struct StreamRuntime(Option<Runtime>);

impl StreamRuntime {
    /// As many workers as the process may use cores, as the main runtime has.
    pub fn start() -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .thread_name("fluxgate-streams")
            .enable_all()
            .build()?;
        Ok(Self(Some(runtime)))
    }

    /// Runs `task` on this runtime; the returned future ends with it (a panic in it is a
    /// panic of the returned future, so the supervisor reports it as one).
    pub fn run<T>(&self, task: T) -> impl Future<Output = anyhow::Result<()>> + Send + 'static
    where
        T: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handle = self
            .0
            .as_ref()
            .expect("the runtime lives until dropped")
            .spawn(task);
        async move {
            match handle.await {
                Ok(result) => result,
                Err(err) => match err.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(err) => Err(anyhow::Error::from(err)),
                },
            }
        }
    }
}

impl Drop for StreamRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

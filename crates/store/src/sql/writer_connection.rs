//! The connection appends run on, kept from one append to the next.
//!
//! sqlx's pool checks a connection with a round trip (`ping`) when it hands it out and
//! again when it takes it back: on PostgreSQL a network round trip each, on SQLite a hop
//! to the connection's thread each. An append is four of those on PostgreSQL and two on
//! SQLite (`SqlStore::append`), so taking its connection from the pool added two more, one
//! of them before the `BEGIN`.
//! Appends come one after another (the log lock serialises them anyway), so the store
//! keeps the connection of the last successful append for the next one:
//!
//! - it is checked only once it has been idle for [`CHECK_AFTER_IDLE`];
//! - a failed append's connection goes back to the pool, which checks it and closes it if
//!   it is broken; one that may be inside a transaction sqlx does not know of (SQLite's
//!   appends begin and commit in their own statements) is closed instead
//!   ([`Writing::unsettled`]);
//! - after [`KEEP_AT_MOST`] it goes back to the pool too, so the pool's lifetime limits
//!   still apply to it;
//! - a pool of one connection keeps nothing: every other query would wait for it.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection as _};

use crate::error::StoreError;

/// A kept connection idle for longer than this is pinged before it is used: under load
/// appends follow each other within milliseconds and skip the ping; a sporadic append
/// pays for it as it did from the pool, and a database that dropped the connection
/// meanwhile costs that ping, not a failed append.
pub(super) const CHECK_AFTER_IDLE: Duration = Duration::from_millis(100);

/// How long one connection is kept before it goes back to the pool.
pub(super) const KEEP_AT_MOST: Duration = Duration::from_secs(60);

/// At most one connection, between appends.
pub(super) struct WriterConnection {
    /// False for a pool of one connection.
    keeps: bool,
    slot: Mutex<Option<Kept>>,
}

struct Kept {
    conn: PoolConnection<Any>,
    taken_from_pool: Instant,
    idle_since: Instant,
}

/// A connection for one append; give it back with [`WriterConnection::keep`] if the append
/// succeeded, or drop it (back to the pool) if it did not.
pub(super) struct Writing {
    pub(super) conn: PoolConnection<Any>,
    taken_from_pool: Instant,
}

impl Writing {
    /// The connection, for statements that may leave it inside a transaction sqlx does not
    /// know of (a `BEGIN` and `COMMIT` of their own): unless [`Unsettled::settled`] is
    /// called, it is closed when dropped instead of going back to the pool. So an append
    /// that fails, or whose future is dropped halfway, never hands the next user an open
    /// transaction that holds SQLite's write lock.
    pub(super) fn unsettled(&mut self) -> Unsettled<'_> {
        Unsettled {
            conn: &mut self.conn,
            settled: false,
        }
    }
}

/// See [`Writing::unsettled`].
pub(super) struct Unsettled<'a> {
    conn: &'a mut PoolConnection<Any>,
    settled: bool,
}

impl Unsettled<'_> {
    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        &mut *self.conn
    }

    /// The statements ended outside any transaction: the connection may be reused.
    pub(super) fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.conn.close_on_drop();
        }
    }
}

impl WriterConnection {
    /// For a pool of `pool_size` connections.
    pub(super) fn new(pool_size: u32) -> Self {
        Self {
            keeps: pool_size > 1,
            slot: Mutex::new(None),
        }
    }

    /// The kept connection (pinged first if it has been idle), or one from the pool.
    pub(super) async fn take(&self, pool: &AnyPool) -> Result<Writing, StoreError> {
        let kept = self.slot.lock().take();
        if let Some(mut kept) = kept {
            if kept.idle_since.elapsed() < CHECK_AFTER_IDLE || kept.conn.ping().await.is_ok() {
                return Ok(Writing {
                    conn: kept.conn,
                    taken_from_pool: kept.taken_from_pool,
                });
            }
            // Broken: closing it, rather than pooling it, frees its place in the pool.
            kept.conn.close_on_drop();
        }
        Ok(Writing {
            conn: pool.acquire().await?,
            taken_from_pool: Instant::now(),
        })
    }

    /// Keeps `writing`'s connection for the next append (unless one is kept already, or
    /// this one has been kept long enough: then it goes back to the pool).
    pub(super) fn keep(&self, writing: Writing) {
        if !self.keeps || writing.taken_from_pool.elapsed() >= KEEP_AT_MOST {
            return;
        }
        let mut slot = self.slot.lock();
        if slot.is_none() {
            *slot = Some(Kept {
                conn: writing.conn,
                taken_from_pool: writing.taken_from_pool,
                idle_since: Instant::now(),
            });
        }
    }

    /// Closes the kept connection (before the pool is closed: the pool waits for every
    /// connection it handed out).
    pub(super) async fn close(&self) {
        let kept = self.slot.lock().take();
        if let Some(kept) = kept {
            let _ = kept.conn.close().await;
        }
    }
}

//! Test helpers (feature `test-util`): a fresh, migrated database per test.
//!
//! SQLite databases live in a temporary directory. PostgreSQL databases are created on the
//! server named by `FLUXGATE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and dropped when the handle is dropped. If
//! that server is unreachable the test fails, naming it: a PostgreSQL test is never
//! skipped, so a run without PostgreSQL cannot pass while testing nothing.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor as _};

use crate::{SqlStore, StoreOptions};

pub const POSTGRES_URL_VAR: &str = "FLUXGATE_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database that exists for the life of this value.
pub struct TestDatabase {
    url: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A new SQLite database file in a temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("fluxgate.db").display()
        );
        Self {
            url,
            postgres: None,
            _dir: Some(dir),
        }
    }

    /// A new, empty PostgreSQL database.
    ///
    /// # Panics
    /// If the server cannot be reached.
    pub async fn postgres() -> Self {
        let admin_url =
            std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let admin = admin_pool(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required for this test and {admin_url} is unreachable ({e}); \
                 start it, or point {POSTGRES_URL_VAR} at one"
            )
        });
        let name = format!("fluxgate_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create a test database");
        admin.close().await;
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("a database URL ends with /<database>");
        Self {
            url: format!("{base}/{name}"),
            postgres: Some((admin_url, name)),
            _dir: None,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PostgreSQL database's name (`None` for SQLite).
    pub fn postgres_name(&self) -> Option<&str> {
        self.postgres.as_ref().map(|(_, name)| name.as_str())
    }

    /// Runs `sql` on the PostgreSQL server as the test administrator, from another
    /// database (for `ALTER DATABASE`, `pg_terminate_backend` and the like).
    ///
    /// # Panics
    /// On SQLite, or if the statement fails.
    pub async fn execute_as_admin(&self, sql: &str) {
        let (admin_url, _) = self.postgres.as_ref().expect("a PostgreSQL test database");
        let admin = admin_pool(admin_url)
            .await
            .expect("connect as administrator");
        admin
            .execute(sqlx::AssertSqlSafe(sql.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        admin.close().await;
    }

    /// A connected, migrated store on this database.
    pub async fn store(&self) -> SqlStore {
        self.store_with(StoreOptions::default()).await
    }

    pub async fn store_with(&self, options: StoreOptions) -> SqlStore {
        let store = SqlStore::connect(&self.url, options)
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate the test database");
        store
    }
}

async fn admin_pool(url: &str) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside any runtime we can rely on: use a short-lived one on a thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = admin_pool(&admin_url).await.ok()?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop a test database; it is left on the server");
        }
    }
}

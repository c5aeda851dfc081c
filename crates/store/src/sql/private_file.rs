//! The SQLite database holds the event log of private projects: its files are readable by
//! the broker's user only. The database file is created 0600 before SQLite opens it (SQLite
//! gives its `-wal` and `-shm` files the database file's mode), and an existing database,
//! `-wal`, `-shm` or `-journal` file that others can read is tightened to 0600, with a
//! warning in the log.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use sqlx::sqlite::SqliteConnectOptions;

use crate::error::{InvalidRequest, StoreError};

/// Files SQLite keeps next to the database.
const COMPANION_SUFFIXES: &[&str] = &["-wal", "-shm", "-journal"];

/// Makes the on-disk files of the SQLite database at `url` private. Does nothing for an
/// in-memory or read-only database.
pub(super) fn make_private(url: &str) -> Result<(), StoreError> {
    let Some(path) = database_file(url)? else {
        return Ok(());
    };
    if !path.exists() {
        create_private(&path)?;
    }
    let mut files = vec![path.clone()];
    files.extend(COMPANION_SUFFIXES.iter().map(|suffix| {
        let mut name = path.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    }));
    for file in files.iter().filter(|f| f.exists()) {
        tighten(file)?;
    }
    Ok(())
}

/// The database file a SQLite URL names, if it is one that may be created on disk.
pub(super) fn database_file(url: &str) -> Result<Option<PathBuf>, StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Invalid(InvalidRequest::DatabaseUrl(e)))?;
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let in_memory = url.contains(":memory:") || query.split('&').any(|p| p == "mode=memory");
    let read_only = query.split('&').any(|p| p == "mode=ro");
    if in_memory || read_only {
        return Ok(None);
    }
    Ok(Some(options.get_filename().to_owned()))
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Invalid(InvalidRequest::DatabaseFile {
        action,
        path: path.to_owned(),
        source,
    })
}

#[cfg(unix)]
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        // Another process (the CLI, a replica) created it in between: tighten it below.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(io_error("create the database file", path, err)),
    }
}

/// Restricts `path` to `private_mode` if its group or others have any access to it.
/// Returns the mode it had when it changed it. The one place that decides what "private"
/// means for fluxgate's files (the broker's data directory uses it too).
#[cfg(unix)]
pub fn restrict_mode(path: &Path, private_mode: u32) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private_mode))?;
    Ok(Some(mode))
}

/// Restricts `path` to `private_mode` (nothing to do where modes do not exist).
#[cfg(not(unix))]
pub fn restrict_mode(_path: &Path, _private_mode: u32) -> std::io::Result<Option<u32>> {
    Ok(None)
}

#[cfg(unix)]
fn tighten(path: &Path) -> Result<(), StoreError> {
    let was = restrict_mode(path, 0o600).map_err(|e| io_error("restrict the mode of", path, e))?;
    if let Some(mode) = was {
        tracing::warn!(
            path = %path.display(),
            was = %format!("{mode:o}"),
            now = "600",
            "tightened the mode of a database file readable by other users"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_database_file_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fluxgate.db");
        make_private(&format!("sqlite://{}?mode=rwc", db.display())).unwrap();
        assert_eq!(mode(&db), 0o600);
    }

    #[test]
    fn loose_database_files_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fluxgate.db");
        for name in ["fluxgate.db", "fluxgate.db-wal", "fluxgate.db-shm"] {
            let path = dir.path().join(name);
            std::fs::write(&path, "").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        make_private(&format!("sqlite://{}", db.display())).unwrap();
        for name in ["fluxgate.db", "fluxgate.db-wal", "fluxgate.db-shm"] {
            assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
        }
    }

    #[test]
    fn in_memory_databases_are_left_alone() {
        assert_eq!(database_file("sqlite::memory:").unwrap(), None);
        assert_eq!(database_file("sqlite://?mode=memory").unwrap(), None);
    }
}

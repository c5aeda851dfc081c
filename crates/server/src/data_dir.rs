//! The data directory is private to the broker's user: it holds the event log of private
//! projects and the generated hook secret. The directory is created 0700 and files in it
//! 0600; a looser mode found at start is tightened, and the change logged.

use std::path::Path;

use anyhow::Context as _;

/// Creates `path` (and missing parents) with mode 0700, or tightens an existing one.
pub fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .with_context(|| format!("cannot create the data directory {}", path.display()))?;
    tighten(path, 0o700)
}

/// Tightens an existing file to 0600 if group or others had any access.
pub fn tighten_file(path: &Path) -> anyhow::Result<()> {
    tighten(path, 0o600)
}

fn tighten(path: &Path, private_mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let metadata = std::fs::metadata(path)
            .with_context(|| format!("cannot inspect {}", path.display()))?;
        let mode = metadata.permissions().mode() & 0o7777;
        // A shared directory such as /tmp (sticky bit) is not ours to close.
        if metadata.is_dir() && mode & 0o1000 != 0 && mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = %format!("{mode:o}"),
                "the data directory is a shared directory; give fluxgate a directory of its own"
            );
            return Ok(());
        }
    }
    let was = fluxgate_store::restrict_mode(path, private_mode).with_context(|| {
        format!(
            "cannot restrict {} to mode {private_mode:o}",
            path.display()
        )
    })?;
    if let Some(mode) = was {
        tracing::warn!(
            path = %path.display(),
            was = %format!("{mode:o}"),
            now = %format!("{private_mode:o}"),
            "tightened the mode of a data file readable by other users"
        );
    }
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
    fn new_directories_are_private_and_loose_ones_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        create_private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);

        let loose = root.path().join("loose");
        std::fs::create_dir(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);

        let file = loose.join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        tighten_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn shared_sticky_directories_are_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        create_private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o1777);
    }
}

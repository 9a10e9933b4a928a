//! Which file the store opened: a database deleted or replaced under a running store
//! is noticed before the next commit (see [`StoreError::Lost`]).

use super::StoreError;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Which file a path named when the store opened it (device and inode): a file deleted
/// or replaced under the store no longer matches, and SQLite, writing to the descriptor
/// it holds, would not notice.
pub(super) struct FileIdentity {
    pub(super) path: std::path::PathBuf,
    device: u64,
    inode: u64,
}

impl FileIdentity {
    pub(super) fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let metadata = std::fs::metadata(path)?;
        Ok(FileIdentity {
            path: path.to_path_buf(),
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }

    /// `Err(StoreError::Lost)` when the path no longer names the file opened.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        let lost = |reason: &str| StoreError::Lost {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        };
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == (self.device, self.inode) => Ok(()),
            Ok(_) => Err(lost("was replaced by another file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(lost("was deleted")),
            Err(e) => Err(lost(&format!("can no longer be checked ({e})"))),
        }
    }
}

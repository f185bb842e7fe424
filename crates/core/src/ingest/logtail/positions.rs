//! The positions file: where each followed file was read up to, keyed by device and inode
//! so a renamed file is still recognised. Written to a temporary file and renamed over the
//! old one, so a crash leaves either the old or the new state, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// Byte offset just after the last complete line processed.
    pub offset: u64,
    /// FNV-1a hash and length of the file's first bytes (its fingerprint), so a file truncated
    /// and refilled while the exporter was down is recognised; absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<(u64, u32)>,
}

/// FNV-1a: a fingerprint, not a security hash.
pub fn fingerprint(bytes: &[u8]) -> (u64, u32) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h, bytes.len() as u32)
}

/// Hashes a [`FileId`] with one multiply per word (and a path's bytes eight at a time): the
/// follower looks up every matched file by identity and path every poll, and SipHash on
/// 10,000 of them cost more than the lookups. Keys come from the filesystem, not from a
/// client, so collisions cannot be forced from outside.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0; 8];
            word.copy_from_slice(w);
            self.write_u64(u64::from_le_bytes(word));
        }
        let mut last = [0; 8];
        last[..words.remainder().len()].copy_from_slice(words.remainder());
        self.write_u64(u64::from_le_bytes(last) ^ bytes.len() as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub type IdBuild = std::hash::BuildHasherDefault<IdHasher>;
/// A map keyed by file identity.
pub type IdMap<V> = std::collections::HashMap<FileId, V, IdBuild>;
pub type IdSet = std::collections::HashSet<FileId, IdBuild>;

impl Position {
    pub fn id(&self) -> FileId {
        FileId {
            dev: self.dev,
            ino: self.ino,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    files: Vec<Position>,
}

/// Why the positions file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    #[error("positions file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A FIFO would block the open, a device would never end: refused without a read.
    #[error("positions file {}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("positions file {}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A write on a disk that stopped answering: served as a failed write.
    #[error("positions file {}: the write {overrun}", path.display())]
    Hung {
        path: PathBuf,
        overrun: crate::budget::Overrun,
    },
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> PositionsError + '_ {
    move |source| PositionsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the positions file; a missing file is an empty list, an unreadable one an error.
/// Anything but a regular file (a FIFO would block the open, a device would never end) is
/// refused without being read.
pub fn load(path: &Path) -> Result<Vec<Position>, PositionsError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let err = io_error(path);
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let meta = file.metadata().map_err(&err)?;
    if !meta.is_file() {
        return Err(PositionsError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(&err)?;
    serde_json::from_slice::<File>(&bytes)
        .map(|f| f.files)
        .map_err(|source| PositionsError::Json {
            path: path.to_owned(),
            source,
        })
}

/// Writes the positions atomically: temporary file, fsync, rename.
pub fn save(path: &Path, files: &[Position]) -> Result<(), PositionsError> {
    let err = io_error(path);
    let body = serde_json::to_vec_pretty(&File {
        version: 1,
        files: files.to_vec(),
    })
    .map_err(|source| PositionsError::Json {
        path: path.to_owned(),
        source,
    })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(&err)?;
    }
    let mut f = std::fs::File::create(&tmp).map_err(&err)?;
    f.write_all(&body).map_err(&err)?;
    f.sync_all().map_err(&err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = std::env::temp_dir().join(format!("positions-test-{}", std::process::id()));
        let path = dir.join("sub/positions.json");
        assert!(load(&path).expect("missing is empty").is_empty());
        let files = vec![Position {
            head: Some(fingerprint(b"abc")),
            path: "/var/log/a.log".into(),
            dev: 1,
            ino: 2,
            offset: 3,
        }];
        save(&path, &files).expect("save");
        assert_eq!(load(&path).expect("load"), files);
        std::fs::write(&path, b"{broken").expect("write");
        assert!(load(&path).is_err());
        // A FIFO is refused at once, not waited on.
        std::fs::remove_file(&path).expect("rm");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(load(&path).is_err_and(|e| matches!(e, PositionsError::NotAFile { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! Finding files: the globs' expansion, with its errors kept (a directory that cannot be read
//! is a failed scan, never "no files"), and a directory's entries by inode, for finding a
//! file again by identity after a rename.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::positions::FileId;

/// A regular file a glob matched.
pub struct Found {
    pub path: PathBuf,
    pub id: FileId,
    pub size: u64,
    pub modified: SystemTime,
    /// Index of the first glob that matched it.
    pub glob: usize,
}

/// One expansion of every glob.
pub struct Scan {
    pub found: Vec<Found>,
    /// Per glob: why it could not be expanded in full this time.
    pub errors: Vec<Option<String>>,
}

/// Whether a pattern names one path (no `*`, `?` or `[`).
pub fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '['])
}

/// A plain path spelled as glob spells what it finds (`a//b` → `a/b`): the path is a label.
pub fn literal_path(pattern: &str) -> PathBuf {
    Path::new(pattern).components().collect()
}

/// Errors that mean "not there", not "could not look".
fn absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

pub fn scan(globs: &[String]) -> Scan {
    // A file two globs match (or one reached by two paths) is found once.
    let mut found: Vec<Found> = Vec::new();
    let mut ids = super::positions::IdSet::default();
    let mut errors = vec![None; globs.len()];
    for (glob, pattern) in globs.iter().enumerate() {
        let mut error = None;
        let mut look = |path: PathBuf, error: &mut Option<String>| {
            // metadata() follows symlinks: a link to the current log is followed.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {
                    let id = FileId {
                        dev: m.dev(),
                        ino: m.ino(),
                    };
                    if ids.insert(id) {
                        found.push(Found {
                            path,
                            id,
                            size: m.len(),
                            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            glob,
                        });
                    }
                }
                Ok(_) => {}
                Err(e) if absent(&e) => {}
                Err(e) => *error = Some(format!("{}: {e}", path.display())),
            }
        };
        if is_literal(pattern) {
            // A plain path (the common case) is one stat, not a directory walk.
            look(literal_path(pattern), &mut error);
        } else {
            match glob::glob(pattern) {
                Ok(paths) => {
                    for entry in paths {
                        match entry {
                            Ok(path) => look(path, &mut error),
                            Err(e) if absent(e.error()) => {}
                            Err(e) => {
                                error = Some(format!("{}: {}", e.path().display(), e.error()))
                            }
                        }
                    }
                }
                Err(e) => error = Some(format!("invalid glob: {e}")),
            }
        }
        errors[glob] = error;
    }
    Scan { found, errors }
}

/// A directory's entries as (name, inode), from readdir alone (no stat per entry), and the
/// directory's device, which its entries share (a mount point inside a log directory is not
/// a log).
pub struct DirEntries {
    pub dev: u64,
    pub entries: Vec<(OsString, u64)>,
}

pub fn read_dir(dir: &Path) -> io::Result<DirEntries> {
    let meta = std::fs::metadata(dir)?;
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        entries.push((entry.file_name(), entry.ino()));
    }
    Ok(DirEntries {
        dev: meta.dev(),
        entries,
    })
}

/// Where file `id` is in `dir`, if it is there and still a regular file.
pub fn find_in(
    dir: &Path,
    entries: &DirEntries,
    id: FileId,
) -> Option<(PathBuf, std::fs::Metadata)> {
    if entries.dev != id.dev {
        return None;
    }
    entries
        .entries
        .iter()
        .filter(|(_, ino)| *ino == id.ino)
        .find_map(|(name, _)| {
            let path = dir.join(name);
            let meta = std::fs::metadata(&path).ok()?;
            (meta.is_file() && meta.dev() == id.dev && meta.ino() == id.ino).then_some((path, meta))
        })
}

/// Names a rotation gives the live file `base` in its directory: logrotate's numbered
/// (`base.1`) and dated (`base-20261207`) names; compressed generations are not logs.
pub fn is_rotated_name(base: &std::ffi::OsStr, name: &std::ffi::OsStr) -> bool {
    let (base, name) = (base.as_encoded_bytes(), name.as_encoded_bytes());
    let Some(rest) = name.strip_prefix(base) else {
        return false;
    };
    const COMPRESSED: &[&[u8]] = &[
        b".gz", b".bz2", b".xz", b".zst", b".lz4", b".lzma", b".lzo", b".Z", b".zip", b".br",
    ];
    matches!(rest.first(), Some(b'.' | b'-'))
        && rest.len() > 1
        && !COMPRESSED.iter().any(|suffix| rest.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn rotated_names_are_numbered_or_dated_and_not_compressed() {
        let base = OsStr::new("engine.log");
        for yes in [
            "engine.log.1",
            "engine.log-20261207",
            "engine.log.2026-12-07",
        ] {
            assert!(is_rotated_name(base, OsStr::new(yes)), "{yes}");
        }
        for no in [
            "engine.log",
            "engine.log.",
            "engine.log.1.gz",
            "engine.log-20261207.zst",
            "engine.logger",
            "other.log.1",
        ] {
            assert!(!is_rotated_name(base, OsStr::new(no)), "{no}");
        }
    }

    /// A directory that cannot be read is an error of its glob, not an empty match.
    #[test]
    fn an_unreadable_directory_is_a_scan_error() {
        let dir = std::env::temp_dir().join(format!("scan-error-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("a.log"), "x\n").expect("file");
        // Not a directory where one is needed: glob's read_dir fails with ENOTDIR, which is
        // "absent"; a path that is a file's child is absent too.
        let ok = scan(&[format!("{}/*.log", dir.display())]);
        assert_eq!(ok.found.len(), 1);
        assert!(ok.errors[0].is_none());
        let missing = scan(&[format!("{}/gone/*.log", dir.display())]);
        assert!(missing.found.is_empty() && missing.errors[0].is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

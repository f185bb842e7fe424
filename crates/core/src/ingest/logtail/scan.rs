//! Finding files: the globs' expansion, with its errors kept (a directory that cannot be read
//! is a failed scan, never "no files"), and a directory's entries by inode, for finding a
//! file again by identity after a rename.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

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
        } else if let Some((dir, names)) = one_directory(pattern) {
            let listed = list(&dir, &names, |path, m| {
                let id = FileId {
                    dev: m.st_dev,
                    ino: m.st_ino,
                };
                if ids.insert(id) {
                    found.push(Found {
                        path,
                        id,
                        size: m.st_size as u64,
                        modified: modified(m),
                        glob,
                    });
                }
            });
            match listed {
                Ok(()) => {}
                Err(e) if absent(&e) => {}
                Err(e) => error = Some(format!("{}: {e}", dir.display())),
            }
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

/// A pattern whose wildcards are all in its last component (`/var/log/db/*.log`, the usual
/// case), spelled so that joining a name to the directory gives the path glob would give:
/// the directory and the pattern of names.
fn one_directory(pattern: &str) -> Option<(PathBuf, glob::Pattern)> {
    let (dir, name) = pattern.rsplit_once('/')?;
    let dir = if dir.is_empty() { "/" } else { dir };
    let plain = Path::new(dir)
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !is_literal(dir) || name.is_empty() || !plain || literal_path(dir).as_os_str() != dir {
        return None;
    }
    Some((PathBuf::from(dir), glob::Pattern::new(name).ok()?))
}

/// The regular files (symlinks followed) in `dir` whose names match, each looked at with
/// `fstatat` on the directory: one path component to resolve, not the whole path, which was
/// most of the cost of a poll over thousands of files.
fn list(
    dir: &Path,
    names: &glob::Pattern,
    mut each: impl FnMut(PathBuf, &libc::stat),
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let handle = std::fs::File::open(dir)?;
    let mut matched: Vec<OsString> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if name
            .to_str()
            .is_some_and(|n| names.matches_with(n, glob::MatchOptions::new()))
        {
            matched.push(name);
        }
    }
    matched.sort();
    let mut c_name: Vec<u8> = Vec::new();
    // SAFETY: a zeroed `stat` is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    for name in matched {
        c_name.clear();
        c_name.extend_from_slice(name.as_bytes());
        c_name.push(0);
        // SAFETY: the name is NUL-terminated (readdir names hold no NUL) and lives across
        // the call; `st` is a valid out-parameter.
        let rc = unsafe { libc::fstatat(handle.as_raw_fd(), c_name.as_ptr().cast(), &mut st, 0) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if absent(&e) {
                continue; // removed since readdir
            }
            return Err(e);
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            each(dir.join(&name), &st);
        }
    }
    Ok(())
}

fn modified(st: &libc::stat) -> SystemTime {
    let since = Duration::new(
        st.st_mtime.max(0) as u64,
        st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
    );
    SystemTime::UNIX_EPOCH + since
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

    /// The one-directory path finds what glob finds, spelled as glob spells it.
    #[test]
    fn a_one_directory_pattern_finds_what_glob_finds() {
        let dir = std::env::temp_dir().join(format!("scan-one-dir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("dir");
        for name in ["a.log", "b.log", ".hidden.log", "c.txt", "sub.log"] {
            std::fs::write(dir.join(name), "x\n").expect("file");
        }
        std::fs::create_dir_all(dir.join("d.log")).expect("a directory that matches");
        std::os::unix::fs::symlink(dir.join("a.log"), dir.join("link.log")).expect("link");
        for pattern in [
            format!("{}/*.log", dir.display()),
            format!("{}/[ab].log", dir.display()),
            format!("{}/?.log", dir.display()),
        ] {
            assert!(one_directory(&pattern).is_some(), "{pattern}");
            let by_glob: Vec<PathBuf> = glob::glob(&pattern)
                .expect("glob")
                .flatten()
                .filter(|p| p.is_file())
                .collect();
            let (d, names) = one_directory(&pattern).expect("one directory");
            let mut ours: Vec<PathBuf> = Vec::new();
            list(&d, &names, |p, _| ours.push(p)).expect("list");
            assert_eq!(ours, by_glob, "{pattern}");
        }
        for not_one in [
            "/a/*/b.log",
            "/a//b/*.log",
            "./x/*.log",
            "/a/./b/*.log",
            "*.log",
        ] {
            assert!(one_directory(not_one).is_none(), "{not_one}");
        }
        let _ = std::fs::remove_dir_all(&dir);
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

//! The OLAP data directory, as two probes: the size and free space of its filesystem
//! (statvfs, every 15 s, 5 s allowed: a hung NFS or FUSE mount shows within one round) and
//! the bytes allocated by its files, as `du` counts them (a walk, which on a large tree is
//! slow: it waits ten times its own duration before the next one, so it never takes more than
//! a tenth of one core, and may run 300 s before it counts as hung).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use exporter_core::probe::Probe;
use exporter_core::schema::SchemaError;
use exporter_core::Metrics;

use crate::settings::OlapSettings;

/// Shortest pause between two measurements.
const MIN_INTERVAL: Duration = Duration::from_secs(15);
/// Pause after a walk, as a multiple of how long the walk took.
const BACKOFF_FACTOR: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsStats {
    pub size_bytes: f64,
    pub free_bytes: f64,
    pub avail_bytes: f64,
}

/// statvfs(2) on the filesystem holding `path`.
pub fn fs_stats(path: &Path) -> std::io::Result<FsStats> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and st is a valid out-pointer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as f64;
    Ok(FsStats {
        size_bytes: st.f_blocks as f64 * frsize,
        free_bytes: st.f_bfree as f64 * frsize,
        avail_bytes: st.f_bavail as f64 * frsize,
    })
}

/// Bytes allocated on disk by everything under `root` (st_blocks × 512, hard links counted
/// once), without following symlinks or crossing into other filesystems.
pub fn allocated_bytes(root: &Path) -> std::io::Result<u64> {
    let top = std::fs::symlink_metadata(root)?;
    let device = top.dev();
    let mut seen_links = std::collections::HashSet::new();
    let mut total = top.blocks() * 512;
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // unreadable or vanished mid-walk: count what we can
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != device {
                continue;
            }
            if meta.nlink() > 1 && !meta.is_dir() && !seen_links.insert((meta.dev(), meta.ino())) {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

exporter_core::metric_handles! {
    struct FilesystemMetrics {
        size: Gauge = "olap_data_filesystem_size_bytes",
        free: Gauge = "olap_data_filesystem_free_bytes",
        avail: Gauge = "olap_data_filesystem_avail_bytes",
    }
}

/// Size and free space of the data directory's filesystem.
#[derive(Clone)]
pub struct DataDirFilesystem {
    dir: PathBuf,
    m: FilesystemMetrics,
}

impl Probe for DataDirFilesystem {
    type Settings = OlapSettings;
    const SOURCE: &'static str = "data_dir";
    const INTERVAL: Duration = MIN_INTERVAL;
    const BUDGET: Duration = Duration::from_secs(5);

    fn bind(settings: &OlapSettings, metrics: &Metrics) -> Result<Vec<Self>, SchemaError> {
        let m = FilesystemMetrics::bind(metrics)?;
        Ok(settings
            .data_dir
            .iter()
            .map(|dir| DataDirFilesystem {
                dir: dir.clone(),
                m: m.clone(),
            })
            .collect())
    }

    fn refresh(&self) -> Result<String, String> {
        match fs_stats(&self.dir) {
            Ok(fs) => {
                let _ = self.m.size.set(&[], fs.size_bytes);
                let _ = self.m.free.set(&[], fs.free_bytes);
                let _ = self.m.avail.set(&[], fs.avail_bytes);
                Ok(format!("measuring {}", self.dir.display()))
            }
            Err(e) => {
                self.unknown();
                Err(format!("statvfs {}: {e}", self.dir.display()))
            }
        }
    }

    fn unknown(&self) {
        for g in [&self.m.size, &self.m.free, &self.m.avail] {
            let _ = g.set_unknown(&[]);
        }
    }
}

exporter_core::metric_handles! {
    struct WalkMetrics {
        used: Gauge = "olap_data_dir_used_bytes",
        walk_seconds: Gauge = "olap_exporter_data_dir_walk_seconds",
    }
}

/// Bytes allocated by the files under the data directory.
#[derive(Clone)]
pub struct DataDirWalk {
    dir: PathBuf,
    m: WalkMetrics,
}

impl Probe for DataDirWalk {
    type Settings = OlapSettings;
    const SOURCE: &'static str = "data_dir_walk";
    const INTERVAL: Duration = MIN_INTERVAL;
    const BUDGET: Duration = Duration::from_secs(300);

    fn bind(settings: &OlapSettings, metrics: &Metrics) -> Result<Vec<Self>, SchemaError> {
        let m = WalkMetrics::bind(metrics)?;
        Ok(settings
            .data_dir
            .iter()
            .map(|dir| DataDirWalk {
                dir: dir.clone(),
                m: m.clone(),
            })
            .collect())
    }

    fn refresh(&self) -> Result<String, String> {
        let started = std::time::Instant::now();
        match allocated_bytes(&self.dir) {
            Ok(bytes) => {
                let _ = self.m.used.set(&[], bytes as f64);
                let _ = self
                    .m
                    .walk_seconds
                    .set(&[], started.elapsed().as_secs_f64());
                Ok(format!("walking {}", self.dir.display()))
            }
            Err(e) => {
                let _ = self.m.used.set_unknown(&[]);
                Err(format!("walking {}: {e}", self.dir.display()))
            }
        }
    }

    fn unknown(&self) {
        let _ = self.m.used.set_unknown(&[]);
    }

    fn pause(&self, took: Duration) -> Duration {
        (took * BACKOFF_FACTOR).max(MIN_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_of_root_is_sane() {
        let fs = fs_stats(Path::new("/")).expect("statvfs /");
        assert!(fs.size_bytes > 0.0);
        assert!(fs.free_bytes >= fs.avail_bytes);
        assert!(fs.size_bytes >= fs.free_bytes);
    }

    #[test]
    fn missing_directory_is_an_error() {
        assert!(allocated_bytes(Path::new("/nonexistent/olap")).is_err());
        assert!(fs_stats(Path::new("/nonexistent/olap")).is_err());
    }
}

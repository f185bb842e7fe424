//! The OLAP data directory: bytes allocated by its files (as `du` counts them) and the size
//! and free space of its filesystem (statvfs). Walking a large tree is slow, so it runs in
//! the background and waits ten times its own duration before the next walk: scrapes only
//! read the last result and the walk never takes more than a tenth of one core.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::future::Future;

use exporter_core::probe::Budgeted;
use exporter_core::schema::SchemaError;
use exporter_core::{Gauge, Metrics, TaskContext};

use crate::settings::OlapSettings;

/// Shortest pause between walks; statvfs is refreshed at this pace too.
const MIN_INTERVAL: Duration = Duration::from_secs(15);
/// Pause after a walk, as a multiple of how long the walk took.
const BACKOFF_FACTOR: u32 = 10;
/// How long statvfs may take, and a round waits for the walk, before the filesystem counts as
/// not answering (a hung NFS or FUSE mount): the call is waited for, never started twice.
const FS_BUDGET: Duration = Duration::from_secs(5);
/// A walk still running after this long shows the used bytes as unknown.
const WALK_LIMIT: Duration = Duration::from_secs(300);

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

/// The gauges this probe writes, resolved once at start-up.
struct DataDirMetrics {
    fs_size: Gauge,
    fs_free: Gauge,
    fs_avail: Gauge,
    used: Gauge,
    walk_seconds: Gauge,
}

impl DataDirMetrics {
    fn resolve(metrics: &Metrics) -> Result<DataDirMetrics, SchemaError> {
        Ok(DataDirMetrics {
            fs_size: metrics.gauge("olap_data_filesystem_size_bytes")?,
            fs_free: metrics.gauge("olap_data_filesystem_free_bytes")?,
            fs_avail: metrics.gauge("olap_data_filesystem_avail_bytes")?,
            used: metrics.gauge("olap_data_dir_used_bytes")?,
            walk_seconds: metrics.gauge("olap_exporter_data_dir_walk_seconds")?,
        })
    }
}

/// Resolves the data-dir gauges; the task measures `olap.data_dir` until shutdown (and does
/// nothing when no directory is configured).
pub fn start(ctx: TaskContext) -> Result<impl Future<Output = ()>, SchemaError> {
    let metrics = DataDirMetrics::resolve(&ctx.metrics)?;
    Ok(run(ctx, metrics))
}

async fn run(mut ctx: TaskContext, m: DataDirMetrics) {
    let settings = ctx.config.section::<OlapSettings>();
    let Some(dir) = settings.and_then(|o| o.data_dir.clone()) else {
        return;
    };
    let health = ctx.health.source("data_dir");
    let mut fs_read = Budgeted::new(FS_BUDGET);
    let mut walker = Budgeted::new(FS_BUDGET);
    // Since when the walk in progress runs, if one does.
    let mut walking: Option<Instant> = None;
    let mut next_walk = Instant::now();
    loop {
        let mut problems = Vec::new();
        let path = dir.clone();
        match fs_read.run(move || fs_stats(&path)).await {
            Ok(Ok(fs)) => {
                let _ = m.fs_size.set(&[], fs.size_bytes);
                let _ = m.fs_free.set(&[], fs.free_bytes);
                let _ = m.fs_avail.set(&[], fs.avail_bytes);
            }
            failed => {
                let e = match failed {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e,
                    Ok(Ok(_)) => String::new(),
                };
                problems.push(format!("statvfs {}: {e}", dir.display()));
                for g in [&m.fs_size, &m.fs_free, &m.fs_avail] {
                    let _ = g.set_unknown(&[]);
                }
            }
        }
        if walking.is_some() || Instant::now() >= next_walk {
            let since = *walking.get_or_insert_with(Instant::now);
            let path = dir.clone();
            let walked = walker
                .run(move || {
                    let span = tracing::info_span!(target: "probe", "data_dir.walk", ok = tracing::field::Empty);
                    let _in_span = span.enter();
                    let started = Instant::now();
                    let used = allocated_bytes(&path);
                    span.record("ok", used.is_ok());
                    (used, started.elapsed())
                })
                .await;
            match walked {
                Ok((Ok(bytes), took)) => {
                    walking = None;
                    let _ = m.used.set(&[], bytes as f64);
                    let _ = m.walk_seconds.set(&[], took.as_secs_f64());
                    next_walk = Instant::now() + (took * BACKOFF_FACTOR).max(MIN_INTERVAL);
                }
                Ok((Err(e), _)) => {
                    walking = None;
                    problems.push(format!("walking {}: {e}", dir.display()));
                    let _ = m.used.set_unknown(&[]);
                    next_walk = Instant::now() + MIN_INTERVAL;
                }
                Err(e) if since.elapsed() >= WALK_LIMIT => {
                    problems.push(format!(
                        "walking {}: {e} (running for {:?})",
                        dir.display(),
                        since.elapsed()
                    ));
                    let _ = m.used.set_unknown(&[]);
                }
                // Still walking a large tree: the last figure stands.
                Err(_) => {}
            }
        }
        if problems.is_empty() {
            health.ok(format!("measuring {}", dir.display()));
        } else {
            health.degraded(format!("measuring {}", dir.display()), problems.join("; "));
        }
        tokio::select! {
            _ = ctx.shutdown.wait() => return,
            _ = tokio::time::sleep(MIN_INTERVAL) => {}
        }
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

//! Real bytes in the OLAP data directory the sidecar measures: a small ring of segment files
//! at the scenario's write rate, and for "storage nearly full" a filler file that brings the
//! filesystem to the requested used share. The sidecar's olap_data_filesystem_* gauges come
//! from statvfs on that directory, so the alert fires from a filesystem that is really full;
//! give the simulator a small filesystem (the e2e test mounts a tmpfs in a user namespace).

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SEGMENT_BYTES: u64 = 256 * 1024;
const RING: usize = 8;
const FILL_CHECK: Duration = Duration::from_secs(3);

pub struct DataDir {
    dir: PathBuf,
    max_fill: u64,
    segment: u64,
    current_len: u64,
    ring: VecDeque<PathBuf>,
    last_fill_check: Option<Instant>,
    refused: bool,
    pub errors: u64,
}

/// (size, available-to-non-root) bytes of the filesystem holding `dir`, from coreutils
/// `stat -f` (std has no statvfs and the simulator keeps to std + serde/toml).
pub fn fs_usage(dir: &Path) -> Option<(u64, u64)> {
    let out = Command::new("stat")
        .args(["-f", "-c", "%S %b %a"])
        .arg(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut it = text.split_whitespace().map(|x| x.parse::<u64>().ok());
    let (bs, blocks, avail) = (it.next()??, it.next()??, it.next()??);
    Some((bs * blocks, bs * avail))
}

impl DataDir {
    pub fn new(dir: &Path, max_fill: u64) -> std::io::Result<DataDir> {
        std::fs::create_dir_all(dir)?;
        Ok(DataDir {
            dir: dir.to_path_buf(),
            max_fill,
            segment: 0,
            current_len: 0,
            ring: VecDeque::new(),
            last_fill_check: None,
            refused: false,
            errors: 0,
        })
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler.dat")
    }

    /// Appends `bytes` to the current segment, rolling and dropping old segments. Returns the
    /// bytes actually written (a full disk writes fewer, as it would for the engine).
    pub fn write(&mut self, bytes: u64) -> u64 {
        let mut left = bytes;
        let mut written = 0;
        while left > 0 {
            if self.ring.is_empty() || self.current_len >= SEGMENT_BYTES {
                self.segment += 1;
                self.current_len = 0;
                self.ring
                    .push_back(self.dir.join(format!("segment-{:06}.dat", self.segment)));
                while self.ring.len() > RING {
                    if let Some(old) = self.ring.pop_front() {
                        let _ = std::fs::remove_file(old);
                    }
                }
            }
            let chunk = left.min(SEGMENT_BYTES - self.current_len);
            let Some(path) = self.ring.back() else { break };
            let ok = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(&vec![0x5a; chunk as usize]));
            if ok.is_err() {
                self.errors += 1;
                break;
            }
            self.current_len += chunk;
            left -= chunk;
            written += chunk;
        }
        written
    }

    /// Keeps the filesystem at `ratio` used (0 removes the filler). Checked every few seconds.
    pub fn maintain_fill(&mut self, ratio: f64) -> Option<String> {
        if self
            .last_fill_check
            .is_some_and(|t| t.elapsed() < FILL_CHECK)
        {
            return None;
        }
        self.last_fill_check = Some(Instant::now());
        if ratio <= 0.0 {
            let _ = std::fs::remove_file(self.filler());
            return None;
        }
        let (size, avail) = fs_usage(&self.dir)?;
        let target_avail = ((1.0 - ratio.min(1.0)) * size as f64) as u64;
        if avail <= target_avail {
            return None;
        }
        let need = avail - target_avail;
        let have = std::fs::metadata(self.filler())
            .map(|m| m.len())
            .unwrap_or(0);
        if have + need > self.max_fill {
            if self.refused {
                return None;
            }
            self.refused = true;
            return Some(format!(
                "not filling {}: reaching {:.0}% needs {} more bytes, over --olap.max-fill={} (use a small filesystem)",
                self.dir.display(),
                ratio * 100.0,
                need,
                self.max_fill
            ));
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler());
        let chunk = vec![0u8; 1 << 20];
        let mut left = need;
        let result = f.and_then(|mut f| {
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        });
        match result {
            Ok(()) => Some(format!(
                "filled {} to {:.0}% ({} bytes added)",
                self.dir.display(),
                ratio * 100.0,
                need
            )),
            Err(e) => {
                self.errors += 1;
                Some(format!("filling {}: {e}", self.dir.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("engine-sim-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn ring_keeps_a_bounded_number_of_segments() {
        let d = tmp("ring");
        let mut dd = DataDir::new(&d, 0).expect("dir");
        let total = SEGMENT_BYTES * (RING as u64 + 4) + 10;
        assert_eq!(dd.write(total), total);
        let files = std::fs::read_dir(&d).expect("read").count();
        assert_eq!(files, RING);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn fill_refuses_a_big_filesystem_beyond_the_cap() {
        let d = tmp("fill");
        let mut dd = DataDir::new(&d, 1 << 20).expect("dir");
        let (size, avail) = fs_usage(&d).expect("stat -f");
        assert!(size > 0 && avail <= size);
        // /tmp is far bigger than 1 MiB: filling it to 99.99% must be refused, not attempted.
        let msg = dd.maintain_fill(0.9999).expect("a message");
        assert!(msg.contains("not filling"), "{msg}");
        assert!(!dd.filler().exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}

//! One followed event-log file: reads what was appended since last time and splits it into
//! complete lines, holding back a last line until its newline arrives. The file may be
//! closed (the follower's open-file budget) and opened again by identity: its offsets and
//! fingerprint stay, so a reopened file resumes where it was, and one that was truncated or
//! replaced meanwhile starts over.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use super::positions::{fingerprint, FileId};

/// How many of a file's first bytes identify it: a copytruncate that refills the file past
/// the old offset between two polls leaves it no shorter, but changes its beginning (a
/// timestamp, at the least), as Vector's checksum fingerprint does.
const HEAD_BYTES: u64 = 256;

/// What the reader hands out.
pub enum Line<'a> {
    Complete(&'a [u8]),
    /// A line longer than the limit; reported once, its bytes are skipped.
    TooLong,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ReadStats {
    pub lines: u64,
    pub bytes: u64,
    pub truncated: bool,
    /// Stopped at the byte budget with more to read.
    pub more: bool,
}

pub struct Reader {
    pub id: FileId,
    /// The path the file was found at first; the label of its self-metrics.
    pub label: String,
    /// Where the file is now (it may have been renamed).
    pub path: PathBuf,
    /// None while closed.
    file: Option<File>,
    /// Bytes of the file consumed so far (a half-read line included).
    read_pos: u64,
    /// End of the last complete line: where a restart, or a reopen, resumes.
    committed: u64,
    /// Read but not yet a line.
    pending: Pending,
    pub last_growth: Instant,
    /// File size at the last look (fstat while open, the scan's stat while closed).
    pub size: u64,
    /// Modification time at the last look: the oldest backlog is read first.
    pub modified: SystemTime,
    /// Modification time when the file was last read to its end: a file rewritten to the
    /// same size since (copytruncate and refill, or a new file with a reused inode) has its
    /// first bytes checked.
    read_modified: Option<SystemTime>,
    /// Fingerprint of the file's first bytes, up to [`HEAD_BYTES`] of lines already read.
    head: Option<(u64, u32)>,
    /// A truncation found at reopen, reported by the next poll.
    truncated_while_closed: bool,
}

impl Reader {
    /// A file followed from `start` (clamped to its size), closed until [`Reader::open`].
    /// `head`: a stored fingerprint, checked when it is opened.
    pub fn new(
        path: PathBuf,
        id: FileId,
        label: String,
        start: u64,
        head: Option<(u64, u32)>,
    ) -> Reader {
        Reader {
            id,
            label,
            path,
            file: None,
            read_pos: start,
            committed: start,
            pending: Pending::default(),
            last_growth: Instant::now(),
            size: start,
            modified: SystemTime::UNIX_EPOCH,
            read_modified: None,
            head,
            truncated_while_closed: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Opens the file at its path if it still is this file (false: the path holds another
    /// one now). A file that became shorter than what was committed, or no longer starts with
    /// the bytes it started with, is read again from its beginning (copytruncate while it was
    /// closed or the exporter was down).
    pub fn open(&mut self) -> io::Result<bool> {
        let mut file = File::open(&self.path)?;
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != (self.id.dev, self.id.ino) {
            return Ok(false);
        }
        self.size = meta.len();
        let replaced = self.size < self.committed
            || self.head.is_some_and(|(hash, len)| {
                let mut now = vec![0; len as usize];
                file.read_exact_at(&mut now, 0).is_err() || fingerprint(&now) != (hash, len)
            });
        if replaced {
            self.restart_at_zero();
            self.truncated_while_closed = true;
        }
        // A line being skipped goes on being skipped; a half-read one is read again.
        if !self.pending.skipping {
            self.read_pos = self.committed;
        }
        let at = self.read_pos.min(self.size);
        file.seek(SeekFrom::Start(at))?;
        self.read_pos = at;
        self.file = Some(file);
        self.remember_head();
        Ok(true)
    }

    /// Closes the file; what was committed stays, a half-read line is read again on reopen.
    pub fn close(&mut self) {
        self.file = None;
        self.pending.partial = Vec::new();
    }

    /// Whether the file has (or, while closed, had at the scan's look) bytes not read yet.
    pub fn wants_reading(&self) -> bool {
        self.size != self.read_pos
            || self.truncated_while_closed
            || Some(self.modified) != self.read_modified
    }

    /// The scan's look at a closed file.
    pub fn observed(&mut self, size: u64, modified: SystemTime) {
        if size != self.size {
            self.last_growth = Instant::now();
        }
        self.size = size;
        self.modified = modified;
    }

    /// Whether the file has no link left (deleted): once read to its end, it can never come
    /// back. Unknown (closed, or fstat failed) is false.
    pub fn deleted(&self) -> bool {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.nlink() == 0)
    }

    fn restart_at_zero(&mut self) {
        self.read_pos = 0;
        self.committed = 0;
        self.pending.partial.clear();
        self.pending.skipping = false;
        self.head = None;
    }

    /// Keeps the fingerprint of the first bytes of what has been read.
    fn remember_head(&mut self) {
        let want = self.committed.min(HEAD_BYTES) as u32;
        if self.head.is_none_or(|(_, len)| len < want) {
            let mut head = vec![0; want as usize];
            if let Some(file) = &self.file {
                if file.read_exact_at(&mut head, 0).is_ok() {
                    self.head = Some(fingerprint(&head));
                }
            }
        }
    }

    /// The fingerprint of the file's first bytes read so far, for the positions file.
    pub fn head(&self) -> Option<(u64, u32)> {
        self.head.filter(|(_, len)| *len > 0)
    }

    /// Whether the open file no longer starts with the bytes it started with.
    fn head_changed(&self) -> bool {
        let (Some((hash, len)), Some(file)) = (self.head, &self.file) else {
            return false;
        };
        let mut now = vec![0; len as usize];
        match file.read_exact_at(&mut now, 0) {
            Ok(()) => fingerprint(&now) != (hash, len),
            // Shorter than what it started with: truncated.
            Err(_) => true,
        }
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Bytes between what was processed and the end of the file.
    pub fn behind(&self) -> u64 {
        self.size.saturating_sub(self.committed)
    }

    /// Bytes not read yet (as of the last look); `behind` also counts a half-read line.
    pub fn unread(&self) -> u64 {
        self.size.saturating_sub(self.read_pos)
    }

    /// Reads up to `budget` new bytes, calling `on_line` for each line completed. A closed
    /// reader reads nothing.
    pub fn poll(
        &mut self,
        chunk: &mut [u8],
        max_line: usize,
        budget: u64,
        mut on_line: impl FnMut(Line<'_>),
    ) -> io::Result<ReadStats> {
        let mut stats = ReadStats {
            truncated: std::mem::take(&mut self.truncated_while_closed),
            ..ReadStats::default()
        };
        let Some(file) = &self.file else {
            return Ok(stats);
        };
        let meta = file.metadata()?;
        self.size = meta.len();
        let modified = meta.modified().ok();
        if let Some(modified) = modified {
            self.modified = modified;
        }
        if self.size == self.read_pos && modified == self.read_modified {
            // Nothing written: no read and no look at the head.
            return Ok(stats);
        }
        if self.size < self.read_pos || self.head_changed() {
            // copytruncate (even refilled past the old offset since the last poll): the same
            // file starts over; whatever was half-read is gone.
            self.restart_at_zero();
            stats.truncated = true;
        }
        let Some(file) = &mut self.file else {
            return Ok(stats);
        };
        if stats.truncated {
            file.seek(SeekFrom::Start(0))?;
        }
        while stats.bytes < budget {
            let want = chunk.len().min((budget - stats.bytes) as usize).max(1);
            let n = match file.read(&mut chunk[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.last_growth = Instant::now();
            self.read_pos += n as u64;
            // A short read reached the end: no second read to be told so.
            let at_end = n < want;
            stats.bytes += n as u64;
            let (lines, rest) = self.pending.split(&chunk[..n], max_line, &mut on_line);
            stats.lines += lines;
            if let Some(rest) = rest {
                self.committed = self.read_pos - rest as u64;
            }
            if at_end {
                break;
            }
        }
        stats.more = stats.bytes >= budget && self.read_pos < self.size;
        if !stats.more {
            self.read_modified = modified;
        }
        self.size = self.size.max(self.read_pos);
        self.remember_head();
        Ok(stats)
    }

    /// The file will not grow any more (rotated away and idle): a last line without a
    /// newline is complete as it is.
    pub fn finish(&mut self, max_line: usize, mut on_line: impl FnMut(Line<'_>)) -> u64 {
        let p = &mut self.pending;
        if p.skipping || p.partial.is_empty() {
            return 0;
        }
        emit(&p.partial, max_line, &mut on_line);
        p.partial.clear();
        self.committed = self.read_pos;
        1
    }
}

/// Bytes read but not yet a line: a half-read one, or the rest of one too long to keep.
#[derive(Debug, Default)]
struct Pending {
    partial: Vec<u8>,
    /// Inside a line too long to keep, already reported: skipped to its end.
    skipping: bool,
}

impl Pending {
    /// Splits the next bytes of the file into lines for `on_line`; returns how many lines
    /// ended and, when one did, how many bytes follow the last newline.
    #[inline]
    fn split(
        &mut self,
        mut data: &[u8],
        max_line: usize,
        on_line: &mut impl FnMut(Line<'_>),
    ) -> (u64, Option<usize>) {
        let mut lines = 0;
        // Lines are a few hundred bytes: an inline SSE2 search finds their end in fewer
        // instructions than memchr's dispatch and AVX2 setup.
        while let Some(i) = crate::ingest::swar::find2(data, b'\n', b'\n') {
            let piece = &data[..i];
            if self.skipping {
                self.skipping = false;
            } else if self.partial.is_empty() {
                emit(piece, max_line, on_line);
            } else if self.partial.len() + piece.len() > max_line {
                on_line(Line::TooLong);
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(piece);
                emit(&self.partial, max_line, on_line);
                self.partial.clear();
            }
            lines += 1;
            data = &data[i + 1..];
        }
        if !self.skipping {
            if self.partial.len() + data.len() > max_line {
                // Never buffer more than one line's worth: report now, skip to its end.
                on_line(Line::TooLong);
                self.partial.clear();
                self.skipping = true;
            } else {
                self.partial.extend_from_slice(data);
            }
        }
        (lines, (lines > 0).then_some(data.len()))
    }
}

fn emit(line: &[u8], max_line: usize, on_line: &mut impl FnMut(Line<'_>)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max_line {
        on_line(Line::TooLong);
    } else if !line.iter().all(u8::is_ascii_whitespace) {
        on_line(Line::Complete(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    fn collect(r: &mut Reader, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut chunk = vec![0u8; 7]; // tiny chunks exercise lines split across reads
        r.poll(&mut chunk, max, u64::MAX, |l| {
            out.push(match l {
                Line::Complete(b) => String::from_utf8_lossy(b).into_owned(),
                Line::TooLong => "<too long>".into(),
            })
        })
        .expect("poll");
        out
    }

    #[test]
    fn a_truncation_refilled_past_the_old_offset_is_seen() {
        let dir = std::env::temp_dir().join(format!("reader-refill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.log");
        std::fs::write(
            &path,
            "{\"t\":\"10:00:01\",\"n\":1}\n{\"t\":\"10:00:02\",\"n\":2}\n",
        )
        .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let mut r = Reader::new(path.clone(), id, "x".into(), 0, None);
        r.open().unwrap();
        assert_eq!(collect(&mut r, 1024).len(), 2);
        // copytruncate, and the engine writes more than before before the next poll.
        let refill: String = (3..9)
            .map(|n| format!("{{\"t\":\"10:00:0{n}\",\"n\":{n}}}\n"))
            .collect();
        std::fs::write(&path, &refill).unwrap();
        assert_eq!(
            collect(&mut r, 1024).len(),
            6,
            "every refilled line is read"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn partial_lines_wait_and_long_lines_are_skipped() {
        let dir = std::env::temp_dir().join(format!("reader-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("a.log");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(b"first\nsec").expect("write");
        let meta = std::fs::metadata(&path).expect("meta");
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let mut r = Reader::new(path.clone(), id, "a".into(), 0, None);
        r.open().expect("open");
        assert_eq!(collect(&mut r, 20), vec!["first"]);
        assert_eq!(r.committed(), 6);
        f.write_all(b"ond\r\n\n").expect("write");
        assert_eq!(collect(&mut r, 20), vec!["second"]);
        f.write_all(&[b'x'; 50]).expect("write");
        assert_eq!(collect(&mut r, 20), vec!["<too long>"]);
        f.write_all(b"xxx\nok\n").expect("write");
        assert_eq!(collect(&mut r, 20), vec!["ok"]);
        assert_eq!(r.behind(), 0);
        // copytruncate
        f.set_len(0).expect("truncate");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("reopen");
        f.write_all(b"new\ntail").expect("write");
        let mut chunk = vec![0u8; 64];
        let mut lines = Vec::new();
        let stats = r
            .poll(&mut chunk, 20, u64::MAX, |l| {
                if let Line::Complete(b) = l {
                    lines.push(b.to_vec())
                }
            })
            .expect("poll");
        assert!(stats.truncated);
        assert_eq!(lines, vec![b"new".to_vec()]);
        let mut last = Vec::new();
        assert_eq!(
            r.finish(20, |l| {
                if let Line::Complete(b) = l {
                    last = b.to_vec()
                }
            }),
            1
        );
        assert_eq!(last, b"tail");
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! Reading the open files within the poll's budget, a slice of lines per hold of the ledger's
//! lock, closing idle files when descriptors run short, then retiring rotated files read to
//! their end and forgetting old ones.

use super::*;

impl Follower {
    /// Reads every file that has something to read: open files first, then closed ones,
    /// oldest backlog first, opening them within the open-file budget (closing idle ones to
    /// make room). Returns true when some file has more to read right away.
    pub(super) fn read_files(&mut self) -> bool {
        let mut more = false;
        let mut open: Vec<FileId> = (self.files.iter())
            .filter(|(_, t)| t.reader.is_open())
            .map(|(id, _)| *id)
            .collect();
        open.sort_by_key(|id| id.ino);
        for id in &open {
            more |= self.read(*id);
        }
        // Rotated-away files done with give their slots to the files that wait.
        self.retire();
        let mut open_count = self.files.values().filter(|t| t.reader.is_open()).count();
        // Over the budget (a reload lowered it): idle files are closed first.
        while open_count > self.options.limits.max_open_files && self.close_one_idle() {
            open_count -= 1;
        }
        let mut waiting: Vec<(SystemTime, FileId)> = (self.files.iter())
            .filter(|(_, t)| !t.reader.is_open() && !t.drained && t.reader.wants_reading())
            .map(|(id, t)| (t.reader.modified, *id))
            .collect();
        waiting.sort();
        let mut left = waiting.len();
        for (_, id) in waiting {
            if open_count >= self.options.limits.max_open_files {
                if !self.close_one_idle() {
                    break;
                }
                open_count -= 1;
            }
            let Some(t) = self.files.get_mut(&id) else {
                continue;
            };
            match t.reader.open() {
                Ok(true) => {
                    left -= 1;
                    open_count += 1;
                    tracing::debug!(target: "ingest", event = "file_opened", path = %t.reader.path.display(), offset = t.reader.committed());
                    more |= self.read(id);
                }
                Ok(false) => {
                    // Replaced since the scan: the next scan finds where it is.
                    left -= 1;
                    if !t.matched {
                        t.drained = true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Renamed or replaced since the scan: the next scan finds where it is.
                    left -= 1;
                    if !t.matched {
                        t.drained = true;
                    }
                }
                Err(e) => {
                    let glob = t.glob;
                    let error = format!("cannot open {}: {e}", t.reader.path.display());
                    self.count(FollowerError::Open);
                    self.glob_error(glob, error);
                }
            }
        }
        self.waiting = left;
        more
    }

    /// Closes the open file idle the longest (matched, nothing unread, no line being
    /// skipped), to give its slot to a file with something to read.
    pub(super) fn close_one_idle(&mut self) -> bool {
        let victim = (self.files.iter())
            .filter(|(_, t)| t.reader.is_open() && t.matched && t.reader.unread() == 0)
            .min_by_key(|(_, t)| t.reader.last_growth)
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.files.get_mut(&id)) {
            Some(t) => {
                t.reader.close();
                true
            }
            None => false,
        }
    }

    /// Reads new lines of one file, a slice at a time under the ledger's lock; returns true
    /// when it has more that may be read right away (false once the read rate's allowance is
    /// spent: the follower sleeps a poll).
    pub(super) fn read(&mut self, id: FileId) -> bool {
        let mut read_this_poll = 0;
        loop {
            let allowance = self
                .rate
                .as_ref()
                .map_or(BUDGET, |rate| rate.budget(BUDGET))
                .min(BUDGET - read_this_poll);
            if allowance == 0 {
                return self.rate.is_none();
            }
            let Some(t) = self.files.get_mut(&id) else {
                return false;
            };
            let mut tally = Tally::default();
            let mapper = &self.mapper;
            let max_line = self.options.max_line_bytes;
            // Opened at the first line, so polls that find nothing new leave no span. It is
            // not entered per line: entering and leaving a span cost more than applying it.
            let mut span: Option<tracing::Span> = None;
            let ledger = self.ledger.clone();
            let mut state = ledger.lock();
            if state.write_failing() {
                return false;
            }
            let result = t.reader.poll(&mut self.chunk, max_line, allowance.min(SLICE), |l| {
                span.get_or_insert_with(|| {
                    tracing::info_span!(target: "ingest", "events.read", path = tracing::field::Empty, lines = tracing::field::Empty, bytes = tracing::field::Empty)
                });
                line(mapper, l, &mut tally)
            });
            state.advance(id, t.reader.committed(), t.reader.head());
            self.counters.flush(&mut tally);
            // The file's own counts move with the lines' effects, in the same hold.
            let series = self.series.get(self.series.label(&t.reader.label));
            if let (Some(series), Ok(stats)) = (series, &result) {
                if stats.truncated {
                    series.truncations.add(1);
                }
                if stats.bytes > 0 {
                    series.lines_read.add(stats.lines);
                    series.read_bytes.add(stats.bytes);
                }
            }
            drop(state);
            ledger.let_scrapes_in();
            if let (Some(span), Ok(stats)) = (&span, &result) {
                span.record("path", t.reader.label.as_str());
                span.record("lines", stats.lines);
                span.record("bytes", stats.bytes);
            }
            match result {
                Ok(stats) => {
                    if stats.truncated {
                        tracing::info!(target: "ingest", event = "truncation", path = %t.reader.label);
                    }
                    read_this_poll += stats.bytes;
                    if let Some(rate) = &mut self.rate {
                        rate.spend(stats.bytes);
                    }
                    if !stats.more {
                        return false;
                    }
                    if read_this_poll >= BUDGET {
                        return true;
                    }
                }
                Err(e) => {
                    let error = format!("reading {}: {e}", t.reader.path.display());
                    let glob = t.glob;
                    self.count(FollowerError::Read);
                    self.glob_error(glob, error);
                    return false;
                }
            }
        }
    }

    /// Files no glob matches any more (rotated away, deleted), read to their end and idle for
    /// the rotate wait, are finished (a last line without a newline is complete) and closed.
    /// A deleted one is forgotten; any other is remembered, closed, with its position.
    pub(super) fn retire(&mut self) {
        let wait = self.options.limits.rotate_wait;
        let max_line = self.options.max_line_bytes;
        let mut forget = Vec::new();
        for (id, t) in &mut self.files {
            let r = &mut t.reader;
            if t.matched || !r.is_open() || r.last_growth.elapsed() < wait || r.unread() > 0 {
                continue;
            }
            let mut tally = Tally::default();
            let mapper = &self.mapper;
            let mut state = self.ledger.lock();
            if state.write_failing() {
                continue;
            }
            let lines = r.finish(max_line, |l| line(mapper, l, &mut tally));
            state.advance(*id, r.committed(), r.head());
            self.counters.flush(&mut tally);
            if let Some(series) = self.series.get(self.series.label(&r.label)) {
                series.lines_read.add(lines);
            }
            drop(state);
            tracing::info!(target: "ingest", event = "file_closed", path = %r.path.display(), "rotated file drained");
            if r.deleted() {
                forget.push(*id);
            }
            r.close();
            t.drained = true;
            self.series_dirty = true;
        }
        let mut state = self.ledger.lock();
        for id in forget {
            self.files.remove(&id);
            state.forget(id);
        }
    }

    /// Drained files are remembered for [`FORGET_AFTER`], at most [`MAX_REMEMBERED`] of them.
    pub(super) fn forget(&mut self) {
        let mut drained: Vec<(Instant, FileId)> = (self.files.iter())
            .filter(|(_, t)| t.drained)
            .map(|(id, t)| (t.unmatched_since.unwrap_or_else(Instant::now), *id))
            .collect();
        let expired = drained
            .iter()
            .filter(|(since, _)| since.elapsed() >= FORGET_AFTER)
            .count();
        let over = drained.len().saturating_sub(MAX_REMEMBERED);
        let n = expired.max(over);
        if n == 0 {
            return;
        }
        drained.sort();
        self.series_dirty = true;
        let mut state = self.ledger.lock();
        for (_, id) in drained.into_iter().take(n) {
            self.files.remove(&id);
            state.forget(id);
        }
    }
}

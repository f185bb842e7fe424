//! Finding the files: a poll's scan reconciled with the table of every file met, rotations
//! (a literal glob's generations, a renamed file found again by inode), the offset a new file
//! is followed from, and files located again after a restart.

use super::*;

impl Follower {
    /// Brings the table up to date with a scan: new files, renamed ones, files no longer
    /// matched (unless their glob failed: a failed scan says nothing of its files).
    pub(super) fn reconcile(&mut self, scan: scan::Scan) {
        let now = Instant::now();
        let mut matched = IdSet::default();
        matched.reserve(scan.found.len());
        let mut rotated_globs: HashSet<usize> = HashSet::new();
        for found in scan.found {
            matched.insert(found.id);
            match self.path_ids.get_mut(found.path.as_os_str()) {
                Some(id) if *id == found.id => {}
                Some(id) => {
                    *id = found.id;
                    rotated_globs.insert(found.glob);
                    self.rotated(&found.path);
                }
                None => {
                    self.path_ids
                        .insert(found.path.as_os_str().to_owned(), found.id);
                    self.series_dirty = true;
                }
            }
            let present_before = self.first_scan || self.new_globs.contains(&found.glob);
            if let Some(t) = self.files.get_mut(&found.id) {
                t.glob = Some(found.glob);
                t.matched = true;
                t.unmatched_since = None;
                t.drained = false;
                if !t.reader.is_open() {
                    t.reader.observed(found.size, found.modified);
                }
                if t.reader.path.as_os_str() != found.path.as_os_str() {
                    t.reader.path = found.path;
                    self.ledger.lock().moved(found.id, &t.reader.path);
                }
                continue;
            }
            let start = self.start_offset(&found.path, found.id, found.size, present_before);
            let label = found.path.to_string_lossy().into_owned();
            self.follow(found.path, found.id, label, Some(found.glob), start);
            if let Some(t) = self.files.get_mut(&found.id) {
                t.reader.observed(found.size, found.modified);
            }
        }
        let failed: HashSet<usize> = (self.glob_errors.iter().enumerate())
            .filter(|(_, e)| e.is_some())
            .map(|(i, _)| i)
            .collect();
        let mut lost: Vec<FileId> = Vec::new();
        for (id, t) in &mut self.files {
            if matched.contains(id) || t.glob.is_some_and(|g| failed.contains(&g)) {
                continue;
            }
            if t.matched {
                self.series_dirty = true;
                t.matched = false;
                t.unmatched_since = Some(now);
                lost.push(*id);
            } else if self.first_scan && !t.drained {
                // Known from the positions file and not matched: look for it.
                lost.push(*id);
            }
        }
        let known = self.path_ids.len();
        self.path_ids.retain(|_, id| self.files.contains_key(id));
        self.series_dirty |= self.path_ids.len() != known;
        self.follow_literal_globs(&rotated_globs, &failed);
        self.locate(lost);
    }

    /// A new file was found at `path` where another one was.
    pub(super) fn rotated(&mut self, path: &Path) {
        let label = path.to_string_lossy();
        if let Some(series) = self.series.get(self.series.label(&label)) {
            series.rotations.add(1);
        }
        tracing::info!(target: "ingest", event = "rotation", path = %label);
    }

    /// Starts following file `id` at `path` from `start`; its counts go to `label`.
    pub(super) fn follow(
        &mut self,
        path: PathBuf,
        id: FileId,
        label: String,
        glob: Option<usize>,
        start: u64,
    ) {
        let matched = glob.is_some();
        self.series.ensure(&label);
        self.series_dirty = true;
        let reader = Reader::new(path.clone(), id, label, start, None);
        self.ledger.lock().track(Position {
            path,
            dev: id.dev,
            ino: id.ino,
            offset: start,
            head: None,
        });
        self.files.insert(
            id,
            Tracked {
                reader,
                glob,
                matched,
                unmatched_since: (!matched).then(Instant::now),
                drained: false,
            },
        );
    }

    pub(super) fn start_offset(
        &self,
        path: &Path,
        id: FileId,
        size: u64,
        present_before: bool,
    ) -> u64 {
        if !present_before {
            // Appeared while running (a new file, or the new file after a rotation):
            // everything in it is new.
            return 0;
        }
        if self
            .stored_paths
            .get(path)
            .is_some_and(|stored| !stored.contains(&id))
        {
            // Known path, different file: rotated while we were down.
            return 0;
        }
        if self.options.read_from_start {
            0
        } else {
            size
        }
    }

    /// A glob that names one file: when the file at its path changed (or at start-up, when
    /// it changed while the exporter was down), the rotated generations that appeared in its
    /// directory since the last look are read from their beginning; this catches rotations
    /// faster than the poll. Known files found there under a new name are followed there.
    pub(super) fn follow_literal_globs(
        &mut self,
        rotated: &HashSet<usize>,
        failed: &HashSet<usize>,
    ) {
        for (glob, pattern) in self.options.globs.clone().iter().enumerate() {
            if scan::is_literal(pattern) && !failed.contains(&glob) {
                self.follow_literal_glob(glob, pattern, rotated.contains(&glob));
            }
        }
    }

    /// One literal glob's directory: generations at rotated names that were not seen before
    /// are followed from their beginning when the live path rotated (`rotated`: its reader saw
    /// it).
    fn follow_literal_glob(&mut self, glob: usize, pattern: &str, rotated: bool) {
        let live = scan::literal_path(pattern);
        let (Some(dir), Some(base)) = (live.parent(), live.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        // A rotation while the exporter was down: the stored file at the path is another.
        let rotated_while_down = self.first_scan
            && self.stored_paths.get(&live).is_some_and(|stored| {
                self.path_ids
                    .get(live.as_os_str())
                    .is_some_and(|now| !stored.contains(now))
            });
        // The directory is read before the live path is looked at: a generation seen
        // under its rotated name was renamed before that look, so the look sees the
        // path changed since the last poll and the generation is taken as new.
        let entries = match scan::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.count(FollowerError::Scan);
                self.glob_error(Some(glob), format!("{}: {e}", dir.display()));
                return;
            }
        };
        let look = self.look_at_live_path(glob, &live, base, &entries);
        let rotated_now = rotated || rotated_while_down || look.changed;
        for (name, ino) in &entries.entries {
            if !scan::is_rotated_name(base, name) {
                continue;
            }
            let id = FileId {
                dev: entries.dev,
                ino: *ino,
            };
            let path = dir.join(name);
            if self.files.contains_key(&id) {
                self.revisit_generation(id, path);
                continue;
            }
            if !rotated_now {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let new = if look.first {
                // At start-up, a generation written since the positions were last
                // written was made while the exporter was down.
                rotated_while_down
                    && meta.modified().ok() > self.stored_modified
                    && self.stored_modified.is_some()
            } else {
                !look.seen_before.contains(ino)
            };
            if new && meta.is_file() {
                tracing::info!(target: "ingest", event = "rotated_generation", path = %path.display(), "a generation rotated before it was seen: read from its beginning");
                self.rotated(&live);
                self.follow(path, id, live.to_string_lossy().into_owned(), None, 0);
                if let Some(t) = self.files.get_mut(&id) {
                    t.reader.observed(
                        meta.len(),
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    );
                }
            }
        }
    }

    /// Notes what is at a literal glob's live path now and which generations sit at its
    /// rotated names, against the last poll's look.
    fn look_at_live_path(
        &mut self,
        glob: usize,
        live: &Path,
        base: &std::ffi::OsStr,
        entries: &scan::DirEntries,
    ) -> LiveLook {
        let live_now = std::fs::metadata(live).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            FileId {
                dev: m.dev(),
                ino: m.ino(),
            }
        });
        let known = self.literal_dirs.entry(glob).or_default();
        let first = !known.looked;
        let changed = !first && live_now != known.live;
        known.looked = true;
        known.live = live_now;
        // Only rotated names: the file at the live name is not a generation yet.
        let seen_before = std::mem::replace(
            &mut known.seen,
            (entries.entries.iter())
                .filter(|(name, _)| scan::is_rotated_name(base, name))
                .map(|(_, ino)| *ino)
                .collect(),
        );
        LiveLook {
            first,
            changed,
            seen_before,
        }
    }

    /// A followed generation found at a rotated name: when it is closed and unmatched it was
    /// renamed while closed, or is a new generation that reuses the inode of a file deleted
    /// while closed, and is looked at again (its first bytes tell which, when it is opened).
    fn revisit_generation(&mut self, id: FileId, path: PathBuf) {
        let Some(t) = self.files.get_mut(&id) else {
            return;
        };
        if t.matched || t.reader.is_open() {
            return;
        }
        if let Ok(meta) = std::fs::metadata(&path) {
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            t.reader.observed(meta.len(), modified);
            if t.drained && t.reader.wants_reading() {
                t.drained = false;
                t.unmatched_since = Some(Instant::now());
            }
        }
        if t.reader.path != path {
            t.reader.path = path;
            self.ledger.lock().moved(id, &t.reader.path);
        }
    }

    /// Files that are no longer matched and not open: find them again by inode in their
    /// directory, so that a rename while closed (or while the exporter was down) still has
    /// its unread lines drained. One not found is kept as a position only.
    pub(super) fn locate(&mut self, ids: Vec<FileId>) {
        let mut dirs: HashMap<PathBuf, Option<DirEntries>> = HashMap::new();
        for id in ids {
            let Some(t) = self.files.get_mut(&id) else {
                continue;
            };
            if t.reader.is_open() {
                continue;
            }
            // Where it was last seen, first: one stat.
            let at_path = std::fs::metadata(&t.reader.path).ok().filter(|m| {
                use std::os::unix::fs::MetadataExt;
                m.is_file() && (m.dev(), m.ino()) == (id.dev, id.ino)
            });
            let found = match at_path {
                Some(meta) => Some((t.reader.path.clone(), meta)),
                None => {
                    let dir = t
                        .reader
                        .path
                        .parent()
                        .unwrap_or(Path::new("."))
                        .to_path_buf();
                    let entries = dirs
                        .entry(dir.clone())
                        .or_insert_with(|| scan::read_dir(&dir).ok());
                    entries.as_ref().and_then(|e| scan::find_in(&dir, e, id))
                }
            };
            match found {
                Some((path, meta)) => {
                    if t.reader.path != path {
                        t.reader.path = path;
                        self.ledger.lock().moved(id, &t.reader.path);
                    }
                    t.reader.observed(
                        meta.len(),
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    );
                    t.drained = !t.reader.wants_reading();
                }
                None => t.drained = true,
            }
            self.series_dirty |= t.drained;
        }
    }
}

/// What a poll saw at a literal glob's live path.
struct LiveLook {
    /// The first look since start-up.
    first: bool,
    /// Another file (or none) is at the live path since the last look.
    changed: bool,
    /// Inodes at rotated names at the last look.
    seen_before: HashSet<u64>,
}

//! The read path: every byte served comes from a scanned, consistent copy (see `served`),
//! or, for files the profile serves unscanned, from the real file with its identity checked.

use super::*;

/// What [`VeilFs::scanned_copy`] found.
pub(super) enum Scanned {
    Copy(Arc<served::Copy>),
    /// Above `max_scan_size`: never scanned (stat of the version found).
    TooLarge(Stat),
}

/// The bytes a read answers with: a slice of a scanned copy, shared rather than copied (a cold
/// `grep -r` reads each file once, so a copy per READ was an allocation and a memcpy per file
/// for nothing), or bytes of its own (read from the file, or masked).
pub(super) enum Served {
    Own(Vec<u8>),
    Shared(Arc<served::Copy>, std::ops::Range<usize>),
}

impl std::ops::Deref for Served {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Served::Own(v) => v,
            Served::Shared(c, r) => &c.bytes_served()[r.clone()],
        }
    }
}

/// Reads up to `size` bytes at `offset`, short only at end of file.
pub(super) fn pread_full(file: &File, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; size as usize];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(errno_of(&e)),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

impl VeilFs {
    /// Reads `size` bytes at `offset` of `file` (the real file of inode `ino`) as the agent may
    /// see them. With redaction on, the bytes come from a consistent copy of the file's current
    /// version, and the view was decided on that very copy (see [`served`]): a file rewritten
    /// in place outside the mount can never be served with another version's masks.
    /// The path a read of `ino` is judged by: its path, or, for a file removed while the agent
    /// holds it open, the path it had then. Reading an open, unlinked file is ordinary POSIX
    /// (temporary files live on it), and the view at that path is the one the agent was shown
    /// before. Removed through the mount, the inode remembers its path ([`Inode::lost_path`]);
    /// removed outside, the table still names it, and an object with no link left has no other
    /// path whose rules could apply. One moved outside the mount while open is judged by where
    /// it is now ([`moved`]). `held`: the open file the read goes through (its
    /// object is the one judged), or None for the inode's fd. The flag: the file was moved
    /// outside the mount (its reads are audited as such).
    fn read_rel(&self, ino: u64, held: Option<BorrowedFd<'_>>) -> Result<(PathBuf, bool), Errno> {
        let Some(rel) = self.inodes.rel_path(ino) else {
            let lost = self.inodes.get(ino).and_then(|i| i.lost_path());
            return lost.map(|p| (p, false)).ok_or(self.no_path_errno());
        };
        let checked = if self.cfg.guard.is_some() {
            self.check_still_at(ino, &rel).map(|_| ())
        } else {
            self.check_unmoved(ino, &rel)
        };
        match checked {
            Ok(()) => Ok((rel, false)),
            Err(e) => self.moved_read_rel(ino, &rel, held, e),
        }
    }

    pub(super) fn read_view(
        &self,
        ino: u64,
        file: &File,
        offset: u64,
        size: u32,
        writable: bool,
    ) -> Result<Served, Errno> {
        if writable {
            return pread_full(file, offset, size).map(Served::Own);
        }
        let (rel, moved) = self.read_rel(ino, Some(file.as_fd()))?;
        if !self.cfg.viewer.redaction_enabled()
            && !self.cfg.viewer.presents_metadata(&rel)
            && !self.cfg.viewer.presents_text(&rel)
        {
            if moved {
                self.audit_moved_read(ino, &rel, None);
            }
            return pread_full(file, offset, size).map(Served::Own);
        }
        match self.scanned_copy(ino, &rel, file)? {
            Scanned::Copy(c) => {
                if moved {
                    self.audit_moved_read(ino, &rel, Some(&c.view));
                }
                self.serve(&rel, &c, offset, size)
            }
            Scanned::TooLarge(st) => {
                if moved {
                    self.audit_moved_read(ino, &rel, None);
                }
                self.read_unscanned(&rel, file, &st, offset, size)
            }
        }
    }

    /// The scanned copy of the current version of `file` (the real file of inode `ino` at
    /// `rel`) that reads are served from, and its view; taken and decided now if there is none.
    pub(super) fn scanned_copy(&self, ino: u64, rel: &Path, file: &File) -> Result<Scanned, Errno> {
        let stat = || backing::stat_fd(file.as_fd());
        let (mut rules, mut last_key, mut waited) = (None, None, false);
        for _ in 0..READ_ATTEMPTS {
            let st = stat().map_err(|e| errno_of(&e))?;
            if st.size > self.cfg.viewer.max_scan_size() {
                return Ok(Scanned::TooLarge(st));
            }
            let sel = self.cfg.viewer.rules_for(rel, &st).id();
            rules = Some(sel);
            let id = view::file_id(&st);
            let key = (st.dev, st.ino);
            last_key = Some(key);
            if let Some(c) = self.copies.get(key)
                && c.id == id
                && c.rules == sel
            {
                // The copy may have been taken ahead of this read (see `ahead`): the first
                // read of this version is still the one the audit trail tells.
                if self.cfg.no_open {
                    self.audit_first_read(ino, rel, &st, &c.view);
                }
                return Ok(Scanned::Copy(c));
            }
            let own = self.copies.own_change(key);
            let data =
                match served::consistent_copy(file, &st, stat, own).map_err(|e| errno_of(&e))? {
                    served::Taken::Copy(data) => data,
                    served::Taken::Changed => continue,
                    served::Taken::Unsettled(wait) => {
                        // Changed outside just now: wait until no write can be in progress,
                        // once; a file still changing is served its last copy (stale, whole,
                        // scanned).
                        if let Some(c) = self.copies.get(key)
                            && c.rules == sel
                            && (waited || self.copies.churning(key))
                        {
                            if waited {
                                self.copies.mark_churning(key);
                            }
                            return Ok(Scanned::Copy(c));
                        }
                        std::thread::sleep(wait);
                        waited = true;
                        continue;
                    }
                };
            let v = self.cfg.viewer.decide_bytes(rel, &st, &data);
            // Masked edits: the view is recorded before it is first served.
            if let View::Masked(r) = &v {
                self.record_served(rel, &st, &data, r)?;
            }
            if self.cfg.no_open {
                self.audit_first_read(ino, rel, &st, &v);
            }
            let c = Arc::new(served::Copy {
                id,
                rules: sel,
                // A denied file's bytes are never served, a synthesized view's are its own.
                data: if matches!(v, View::Denied(_) | View::Synth(_)) {
                    Vec::new()
                } else {
                    data
                },
                view: v,
            });
            // A refusal that only lasts while a history scan runs is not kept for the version.
            if !view::is_pending(&c.view) {
                self.copies.put(key, c.clone());
            }
            return Ok(Scanned::Copy(c));
        }
        // Never still long enough: the last consistent copy is stale but was scanned.
        if let Some(c) = last_key.and_then(|k| self.copies.get(k))
            && Some(c.rules) == rules
        {
            return Ok(Scanned::Copy(c));
        }
        audit::denied("read", rel, "the file kept changing while it was read");
        Err(Errno::EIO)
    }

    /// The size of the synthesized view of inode `ino` (real stat `st`), when it has one: what
    /// lookup and getattr report, so the kernel's idea of the file's end (and mmap) matches
    /// the bytes reads serve. `None` when its view is the file's own bytes, or refused.
    pub(super) fn synthesized_size(&self, ino: u64, st: &Stat) -> Option<u64> {
        if st.kind() != Kind::File {
            return None;
        }
        let inode = self.inodes.get(ino)?;
        if !self.cfg.viewer.may_synthesize(&inode.location().name) {
            return None;
        }
        let (rel, _) = self.read_rel(ino, None).ok()?;
        if !self.cfg.viewer.is_synthesized(&rel, st) {
            return None;
        }
        let fd = self.fd(&inode).ok()?;
        let file = backing::reopen_as(fd.as_fd(), Kind::File, libc::O_RDONLY).ok()?;
        match self.scanned_copy(ino, &rel, &file).ok()? {
            Scanned::Copy(c) => match &c.view {
                View::Synth(s) => Some(s.bytes.len() as u64),
                _ => None,
            },
            Scanned::TooLarge(st) => match self.cfg.viewer.decide(&rel, file.as_fd(), &st) {
                View::Synth(s) => Some(s.bytes.len() as u64),
                _ => None,
            },
        }
    }

    /// Bytes `offset..offset+size` of a scanned copy, as its view allows.
    pub(super) fn serve(
        &self,
        rel: &Path,
        c: &Arc<served::Copy>,
        offset: u64,
        size: u32,
    ) -> Result<Served, Errno> {
        if let View::Denied(reason) = &c.view {
            audit::denied("read", rel, reason);
            return Err(Errno::EACCES);
        }
        let data = c.bytes_served();
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(size as usize).min(data.len());
        if let View::Masked(r) = &c.view {
            let mut buf = data[start..end].to_vec();
            r.apply(offset, &mut buf);
            return Ok(Served::Own(buf));
        }
        Ok(Served::Shared(c.clone(), start..end))
    }

    /// A file too large to scan: served only where the profile allows unscannable files, from
    /// the real file with its identity checked around the read.
    pub(super) fn read_unscanned(
        &self,
        rel: &Path,
        file: &File,
        st: &Stat,
        offset: u64,
        size: u32,
    ) -> Result<Served, Errno> {
        match self.cfg.viewer.decide(rel, file.as_fd(), st) {
            View::Denied(reason) => {
                audit::denied("read", rel, &reason);
                return Err(Errno::EACCES);
            }
            // A metadata stub of a file too large to read: made from its stat alone.
            v @ View::Synth(_) => {
                let c = Arc::new(served::Copy {
                    id: view::file_id(st),
                    rules: 0,
                    data: Vec::new(),
                    view: v,
                });
                return self.serve(rel, &c, offset, size);
            }
            View::Raw | View::Masked(_) => {}
        }
        let buf = pread_full(file, offset, size)?;
        let after = backing::stat_fd(file.as_fd()).map_err(|e| errno_of(&e))?;
        if view::file_id(&after) != view::file_id(st) {
            return Err(Errno::EAGAIN);
        }
        Ok(Served::Own(buf))
    }

    /// No-open mode has no OPEN to log: the first read of each version of a file is logged
    /// instead (later reads of it are served by the page cache and never reach veilfs).
    pub(super) fn audit_first_read(&self, ino: u64, rel: &Path, st: &Stat, view: &View) {
        let Some(inode) = self.inodes.get(ino) else {
            return;
        };
        let id = view::file_id(st);
        let mut last = inode.last_open.lock().unwrap_or_else(|e| e.into_inner());
        if *last != Some(id) {
            *last = Some(id);
            if let View::Synth(s) = view {
                audit::emit(&audit::AuditEvent::Synthesized {
                    path: rel.to_path_buf(),
                    view: s.kind.to_string(),
                    rules: s.rules.clone(),
                    redactions: s.redactions,
                });
                return;
            }
            let (rules, redactions) = match view {
                View::Masked(r) => audit::rules_fired(r),
                _ => (Vec::new(), 0),
            };
            audit::emit(&audit::AuditEvent::Read {
                path: rel.to_path_buf(),
                masked: matches!(view, View::Masked(_)),
                rules,
                redactions,
                moved_outside: false,
            });
        }
    }

    /// A read in no-open mode of a file whose scanned copy is ready (taken ahead of the reader
    /// by [`ahead`](super::ahead), or by an earlier read of the same version): answered from
    /// the copy once the object's stat shows the same version, without reopening the file for
    /// I/O. Exactly the check [`Self::scanned_copy`] makes before it serves a kept copy (and the
    /// same audit), minus the reopen it needs only to read. `None`: take the full path.
    fn read_ready(
        &self,
        inode: &Arc<Inode>,
        offset: u64,
        size: u32,
    ) -> Option<Result<Served, Errno>> {
        if !self.cfg.viewer.redaction_enabled()
            || self
                .cfg
                .breaker
                .as_ref()
                .is_some_and(|b| b.counts_reads() || b.is_tripped())
        {
            return None;
        }
        // Cheap first: most cold reads without scan-ahead find nothing here.
        self.copies.get(inode.key)?;
        let fd = self.fd(inode).ok()?;
        let st = backing::stat_fd(fd.as_fd()).ok()?;
        if st.kind() != Kind::File || st.size > self.cfg.viewer.max_scan_size() {
            return None;
        }
        let (rel, _) = self.read_rel(inode.ino, Some(fd.as_fd())).ok()?;
        let sel = self.cfg.viewer.rules_for(&rel, &st).id();
        let c = self.copies.get((st.dev, st.ino))?;
        if c.id != view::file_id(&st) || c.rules != sel {
            return None;
        }
        self.audit_first_read(inode.ino, &rel, &st, &c.view);
        Some(self.serve(&rel, &c, offset, size))
    }

    /// A read in no-open mode: no handle, the inode's file is reopened for it.
    pub(super) fn read_unopened(
        &self,
        ino: INodeNo,
        offset: u64,
        size: u32,
    ) -> Result<Served, Errno> {
        let inode = self.inode(ino)?;
        if inode.kind != Kind::File {
            return Err(Errno::EISDIR);
        }
        if let Some(r) = self.read_ready(&inode, offset, size) {
            return r;
        }
        let fd = self.fd(&inode)?;
        let file =
            backing::reopen_as(fd.as_fd(), Kind::File, libc::O_RDONLY).map_err(|e| errno_of(&e))?;
        if self
            .cfg
            .breaker
            .as_ref()
            .is_some_and(|b| b.counts_reads() || b.is_tripped())
        {
            // No OPEN in this mode: each read counts its file (distinct files are what count).
            let st = backing::stat_fd(file.as_fd()).map_err(|e| errno_of(&e))?;
            self.count_read(&st)?;
        }
        if !self.cfg.viewer.redaction_enabled()
            && let Ok((rel, _)) = self.read_rel(ino.0, Some(file.as_fd()))
            && !self.cfg.viewer.presents_text(&rel)
            && let Ok(st) = backing::stat_fd(file.as_fd())
        {
            self.audit_first_read(ino.0, &rel, &st, &View::Raw);
        }
        self.read_view(ino.0, &file, offset, size, false)
    }
}

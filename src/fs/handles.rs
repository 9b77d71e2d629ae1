//! Open files: the view decided at open, passthrough or the page cache, and the handle table.

use super::*;

/// Looks up an open handle and checks it was opened for `ino`.
pub(super) fn checked_handle<T>(
    map: &RwLock<std::collections::HashMap<u64, Arc<T>>>,
    fh: FileHandle,
    ino: INodeNo,
    ino_of: impl Fn(&T) -> u64,
) -> Result<Arc<T>, Errno> {
    let h = map
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&fh.0)
        .cloned()
        .ok_or(Errno::EBADF)?;
    if ino_of(&h) != ino.0 {
        return Err(Errno::EBADF);
    }
    Ok(h)
}

impl VeilFs {
    pub(super) fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// The open file `fh`, checked to belong to `ino` (every read and write checks it).
    pub(super) fn handle(&self, fh: FileHandle, ino: INodeNo) -> Result<Arc<Handle>, Errno> {
        checked_handle(&self.handles, fh, ino, |h| h.ino)
    }

    /// Opens a regular file for the agent: decides the view, then picks passthrough, the page
    /// cache, or userspace masking.
    pub(super) fn open_file(
        &self,
        inode: &Arc<Inode>,
        flags: i32,
        reply: ReplyOpen,
        writable: bool,
    ) -> Result<(), (Errno, ReplyOpen)> {
        // A writable handle's path was checked by the write path just before (`changing_path`)
        // and names it in the audit only: a second check would cost its `openat2` and `fstat`
        // and narrow no race (the handle is opened from the inode's fd, not by path).
        let rel = if writable {
            self.inodes.rel_path(inode.ino).ok_or(self.no_path_errno())
        } else {
            self.rel(inode.ino)
        };
        let rel = match rel {
            Ok(r) => r,
            Err(e) => return Err((e, reply)),
        };
        let ifd = match self.fd(inode) {
            Ok(f) => f,
            Err(e) => return Err((e, reply)),
        };
        let st = match backing::stat_fd(ifd.as_fd()) {
            Ok(s) => s,
            Err(e) => return Err((errno_of(&e), reply)),
        };
        let view = if writable {
            // Writable handles are only handed out for files whose view is their content
            // (checked by the write path), so there is nothing to mask.
            View::Raw
        } else {
            self.cfg.viewer.decide(&rel, ifd.as_fd(), &st)
        };
        if !writable && let Err(e) = self.count_read(&st) {
            return Err((e, reply));
        }
        let mut synth = None;
        let redactions = match view {
            View::Raw => None,
            View::Masked(r) => Some(r),
            View::Synth(s) => {
                synth = Some(s);
                None
            }
            View::Denied(reason) => {
                audit::denied("read", &rel, &reason);
                return Err((Errno::EACCES, reply));
            }
        };
        let file = match backing::reopen_as(ifd.as_fd(), Kind::File, flags) {
            Ok(f) => f,
            Err(e) => return Err((errno_of(&e), reply)),
        };
        // Small files are cheaper through the page cache (kept across opens while unchanged)
        // than through passthrough, whose set-up costs two ioctls per open. Passthrough serves
        // whatever the real file holds at each read, never a scanned copy: only for files no
        // rule applies to (a clean file rewritten outside could otherwise show a new secret).
        let try_passthrough = redactions.is_none()
            && synth.is_none()
            && st.size >= PASSTHROUGH_MIN_SIZE
            && self.cfg.viewer.rules_for(&rel, &st).is_empty()
            && !writable
            // A diverted copy may be applied and dropped while a backing id still holds it.
            && !inode.is_diverted()
            && self.cfg.passthrough
            && self.passthrough_ok.load(Ordering::Relaxed);
        let mut passthrough_id = None;
        if try_passthrough {
            let mut ids = self.backing_ids.lock().unwrap_or_else(|e| e.into_inner());
            match ids.get_mut(&inode.ino) {
                Some((id, n)) => {
                    *n += 1;
                    passthrough_id = Some(id.clone());
                }
                None => match reply.open_backing(&file) {
                    Ok(id) => {
                        let id = Arc::new(id);
                        ids.insert(inode.ino, (id.clone(), 1));
                        passthrough_id = Some(id);
                    }
                    Err(e) => {
                        debug!("passthrough unavailable for {}: {e}", rel.display());
                    }
                },
            }
        }
        let keep_cache = self.note_open(inode, &st, writable);
        let (rules, n) = redactions
            .as_deref()
            .map(audit::rules_fired)
            .unwrap_or_default();
        let fh = self.insert_handle(inode, file, writable, passthrough_id.is_some());
        if exec::is_exec_open(flags) {
            // Before the reply: the kernel denies write access as soon as it has it.
            self.executing.opened(fh, inode.ino);
        }
        audit::emit(&match synth {
            // Audited as what it is: not the file's bytes.
            Some(s) => audit::AuditEvent::Synthesized {
                path: rel,
                view: s.kind.to_string(),
                rules: s.rules.clone(),
                redactions: s.redactions,
            },
            None => audit::AuditEvent::Open {
                path: rel,
                writable,
                masked: redactions.is_some(),
                rules,
                redactions: n,
            },
        });
        // FLUSH does nothing for a handle that is not a masked edit (or a deferred write):
        // without it close(2) costs no round trip.
        let mut fflags = if self.flushes_on_close(writable) {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_NOFLUSH
        };
        if keep_cache {
            fflags |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        match passthrough_id {
            Some(id) => reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &id),
            None => reply.opened(FileHandle(fh), fflags),
        }
        Ok(())
    }

    /// Remembers the identity of the file at this open; true when the kernel may keep the
    /// page cache (the file is unchanged since the last open).
    pub(super) fn note_open(&self, inode: &Inode, st: &Stat, writable: bool) -> bool {
        let id = view::file_id(st);
        let mut last = inode.last_open.lock().unwrap_or_else(|e| e.into_inner());
        let keep = !writable && *last == Some(id);
        *last = Some(id);
        keep
    }

    /// Registers an open file as a handle.
    pub(super) fn insert_handle(
        &self,
        inode: &Inode,
        file: File,
        writable: bool,
        passthrough: bool,
    ) -> u64 {
        let fh = self.new_fh();
        let h = Arc::new(Handle {
            ino: inode.ino,
            file,
            writable,
            wrote: AtomicBool::new(false),
            flushed: AtomicBool::new(false),
            passthrough,
            masked: None,
        });
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, h);
        fh
    }

    pub(super) fn release_handle(&self, fh: u64) -> Option<Arc<Handle>> {
        let h = self
            .handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh)?;
        if h.passthrough {
            let mut ids = self.backing_ids.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, n)) = ids.get_mut(&h.ino) {
                *n -= 1;
                if *n == 0 {
                    ids.remove(&h.ino);
                }
            }
        }
        Some(h)
    }
}

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
        known: Option<Stat>,
        pre: Option<(File, i32)>,
    ) -> Result<(), (Errno, ReplyOpen)> {
        // A writable handle's path was checked by the write path just before (`changing_path`)
        // and names it in the audit only: a second check would cost its `openat2` and `fstat`
        // and narrow no race (the handle is opened from the inode's fd, not by path). `known`:
        // the stat that check took, when nothing changed the file since (no truncate). `pre`:
        // the backing file, when the write path opened it already (with its flags).
        let rel = if writable {
            self.inodes
                .rel_path(inode.ino)
                .map(|r| (r, known))
                .ok_or(self.no_path_errno())
        } else {
            self.rel_checked(inode.ino)
        };
        let (rel, checked) = match rel {
            Ok(r) => r,
            Err(e) => return Err((e, reply)),
        };
        let ifd = match self.fd(inode) {
            Ok(f) => f,
            Err(e) => return Err((e, reply)),
        };
        // The path check just stated the object (same dev/ino as `ifd`'s, in this request).
        let st = match checked.map_or_else(|| backing::stat_fd(ifd.as_fd()), Ok) {
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
        let opened = match pre {
            Some(p) => Ok(p),
            None => self.open_backing(ifd.as_fd(), flags, writable),
        };
        let (file, flags) = match opened {
            Ok(f) => f,
            Err(e) => return Err((errno_of(&e), reply)),
        };
        // Small files are cheaper through the page cache (kept across opens while unchanged)
        // than through passthrough, whose set-up costs two ioctls per open. Passthrough serves
        // whatever the real file holds at each read, never a scanned copy: only for files no
        // rule applies to (a clean file rewritten outside could otherwise show a new secret).
        // A write handle passes through at any size (its pre-image was captured at this open,
        // and each write it passes saves a round trip), unless its writes must be seen: in
        // deferred apply, or by a breaker counting overwritten bytes.
        let want_passthrough = redactions.is_none()
            && synth.is_none()
            && (if writable {
                self.writes_pass_through()
            } else {
                st.size >= PASSTHROUGH_MIN_SIZE
            })
            && self.cfg.viewer.rules_for(&rel, &st).is_empty()
            // A diverted copy may be applied and dropped while a backing id still holds it.
            && !inode.is_diverted()
            // Writes that clear set-id bits must reach veilfs, which clears them (setid.rs).
            && !(writable && super::setid::bits_to_clear(st.mode) != 0)
            && self.cfg.passthrough
            && self.passthrough_ok.load(Ordering::Relaxed);
        let (io, passthrough_id) = self.register_io(inode.ino, want_passthrough, || {
            super::setid::registered_without_fsetid(|| reply.open_backing(&file)).inspect_err(|e| {
                debug!("passthrough unavailable for {}: {e}", rel.display());
            })
        });
        let keep_cache = self.note_open(inode, &st, writable);
        let (rules, n) = redactions
            .as_deref()
            .map(audit::rules_fired)
            .unwrap_or_default();
        let fh = self.insert_handle(inode, file, flags, writable, io);
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
        if io == Io::Direct {
            fflags |= FopenFlags::FOPEN_DIRECT_IO;
        }
        match passthrough_id {
            Some(id) => reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &id),
            None => reply.opened(FileHandle(fh), fflags),
        }
        Ok(())
    }

    /// Remembers the identity of the file at this open; true when the kernel may keep the
    /// page cache (the file is unchanged since the last open).
    /// Opens the backing file of a handle from the inode's fd, with the agent's `flags`; returns
    /// it with the flags it was opened with. A write-only handle of veilfs's own is opened for
    /// reading too when the file allows it, so that its post-image is read through it at
    /// release instead of through a reopen (an `open` and a `close`). The agent's descriptor
    /// keeps the access it asked for: the kernel checks every read against that, and veilfs
    /// reads this handle only to hash it. `O_DIRECT` handles keep their flags (their
    /// post-image reopens: direct reads need aligned buffers).
    pub(super) fn open_backing(
        &self,
        ifd: BorrowedFd<'_>,
        flags: i32,
        writable: bool,
    ) -> std::io::Result<(File, i32)> {
        if writable && flags & libc::O_ACCMODE == libc::O_WRONLY && flags & libc::O_DIRECT == 0 {
            let rw = (flags & !libc::O_ACCMODE) | libc::O_RDWR;
            match backing::reopen_as(ifd, Kind::File, rw) {
                Ok(f) => return Ok((f, rw)),
                // A file veilfs may write but not read (a user's mount, mode 0200): as asked.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {}
                Err(e) => return Err(e),
            }
        }
        backing::reopen_as(ifd, Kind::File, flags).map(|f| (f, flags))
    }

    pub(super) fn note_open(&self, inode: &Inode, st: &Stat, writable: bool) -> bool {
        let id = view::file_id(st);
        let mut last = inode.last_open.lock().unwrap_or_else(|e| e.into_inner());
        let keep = !writable && *last == Some(id);
        *last = Some(id);
        keep
    }

    /// Registers an open file as a handle, whose I/O mode was registered with
    /// [`Self::register_io`] (or, for `Io::Direct`, needs none).
    pub(super) fn insert_handle(
        &self,
        inode: &Inode,
        file: File,
        flags: i32,
        writable: bool,
        io: Io,
    ) -> u64 {
        let fh = self.new_fh();
        let h = Arc::new(Handle {
            ino: inode.ino,
            file,
            writable,
            // O_DIRECT reads need aligned buffers: such a handle's post-image reopens the file.
            readable: flags & libc::O_ACCMODE != libc::O_WRONLY && flags & libc::O_DIRECT == 0,
            // A write handle passing through is not told of its writes: its post-image is
            // taken at release whether or not it wrote.
            wrote: AtomicBool::new(writable && io == Io::Passthrough),
            flushed: AtomicBool::new(false),
            io,
            masked: None,
            clear_setid: AtomicBool::new(false),
        });
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, h);
        fh
    }

    /// The stack depth passthrough is asked for: the backing files' own depth plus one. The
    /// kernel refuses a backing file whose filesystem is as deep as the mount's limit, and
    /// overlay mode's real files are on overlayfs (depth 1).
    pub(super) fn backing_stack_depth(&self) -> u32 {
        const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
        match self
            .root_fd()
            .ok()
            .and_then(|fd| rustix::fs::fstatfs(&*fd).ok())
        {
            Some(s) if s.f_type as u64 == OVERLAYFS_SUPER_MAGIC => 2,
            _ => 1,
        }
    }

    /// Whether a write handle may pass its writes straight to the real file (see
    /// [`Self::open_file`]): only when the profile asks for it (`passthrough_writes`: the
    /// kernel keeps passing an open file's writes after a revoke or a breaker trip, which
    /// veilfs cannot stop), not when they must wait in a private copy (deferred apply), nor
    /// when the breaker counts overwritten bytes, which it can only do for writes it sees. (An
    /// `O_APPEND` open is no exception: the agent can clear the flag with `fcntl`.)
    pub(super) fn writes_pass_through(&self) -> bool {
        self.cfg.passthrough_writes
            && self.deferred.is_none()
            && !self
                .cfg
                .breaker
                .as_ref()
                .is_some_and(|b| b.counts_overwrites())
    }

    /// Decides the I/O mode of a new open of inode `ino` and counts it (see [`choose_io`]);
    /// `open_backing` registers the file with the kernel when a new backing id is needed, and
    /// a failure there falls back to the page cache when nothing forbids it.
    pub(super) fn register_io(
        &self,
        ino: u64,
        want_passthrough: bool,
        open_backing: impl FnOnce() -> std::io::Result<fuser::BackingId>,
    ) -> (Io, Option<Arc<fuser::BackingId>>) {
        let mut modes = self.io_modes.lock().unwrap_or_else(|e| e.into_inner());
        let state = modes.entry(ino).or_default();
        match choose_io(state, want_passthrough) {
            Choice::Reuse => match &mut state.backing {
                Some((id, n)) => {
                    *n += 1;
                    (Io::Passthrough, Some(id.clone()))
                }
                None => (Io::Direct, None),
            },
            Choice::NewBacking => match open_backing() {
                Ok(id) => {
                    let id = Arc::new(id);
                    state.backing = Some((id.clone(), 1));
                    (Io::Passthrough, Some(id))
                }
                Err(_) => {
                    state.cached += 1;
                    (Io::Cached, None)
                }
            },
            Choice::Cached => {
                state.cached += 1;
                (Io::Cached, None)
            }
            Choice::Direct => (Io::Direct, None),
        }
    }

    /// Forgets an open of `ino` in mode `io` (at its release); the last passthrough open
    /// drops the inode's backing id.
    fn unregister_io(&self, ino: u64, io: Io) {
        let mut modes = self.io_modes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = modes.get_mut(&ino) else {
            return;
        };
        match io {
            Io::Passthrough => {
                if let Some((_, n)) = &mut state.backing {
                    *n -= 1;
                    if *n == 0 {
                        state.backing = None;
                    }
                }
            }
            Io::Cached => state.cached = state.cached.saturating_sub(1),
            Io::Direct => {}
        }
        if state.backing.is_none() && state.cached == 0 {
            modes.remove(&ino);
        }
    }

    pub(super) fn release_handle(&self, fh: u64) -> Option<Arc<Handle>> {
        let h = self
            .handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh)?;
        self.unregister_io(h.ino, h.io);
        Some(h)
    }
}

/// For [`VeilFs::register_io`] of an open that never passes through.
pub(super) fn no_backing() -> std::io::Result<fuser::BackingId> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// How the kernel does an open file's I/O. It keeps one mode per inode: while a file of the
/// inode is open with passthrough, an open that would use the page cache fails with EIO, and
/// the other way round; direct I/O mixes with both. veilfs answers every open so that the
/// modes of an inode's open files never conflict.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Io {
    /// Reads and writes go from the kernel to the real file (FUSE passthrough).
    Passthrough,
    /// Through veilfs, with the kernel's page cache.
    Cached,
    /// Through veilfs, without the page cache (`FOPEN_DIRECT_IO`).
    Direct,
}

/// The open files of one inode, by I/O mode: its passthrough backing id (shared by all of them)
/// with their count, and the count of those using the page cache.
#[derive(Default)]
pub(super) struct InodeIo {
    backing: Option<(Arc<fuser::BackingId>, usize)>,
    cached: usize,
}

/// What a new open of an inode in `state` gets.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// The inode's live backing id.
    Reuse,
    /// A backing id of its own: nothing else is open.
    NewBacking,
    Cached,
    Direct,
}

/// The I/O mode of a new open of an inode whose open files are `state` (see [`Io`]). An open
/// that may pass through does, unless page-cache opens are live (then it uses the cache too);
/// one that may not uses the page cache, unless passthrough opens are live (then it goes
/// direct, which never conflicts).
fn choose_io(state: &InodeIo, want_passthrough: bool) -> Choice {
    choose(state.backing.is_some(), state.cached > 0, want_passthrough)
}

fn choose(backed: bool, cached: bool, want_passthrough: bool) -> Choice {
    match (backed, want_passthrough) {
        (true, true) => Choice::Reuse,
        (true, false) => Choice::Direct,
        (false, true) if !cached => Choice::NewBacking,
        (false, _) => Choice::Cached,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inode's open files never mix passthrough and page-cache I/O (the kernel fails such
    /// an open with EIO): the first open decides, later ones follow or go direct.
    #[test]
    fn opens_of_one_inode_never_mix_passthrough_and_the_page_cache() {
        assert_eq!(choose(false, false, true), Choice::NewBacking);
        assert_eq!(choose(false, false, false), Choice::Cached);
        assert_eq!(choose(true, false, true), Choice::Reuse);
        assert_eq!(choose(true, false, false), Choice::Direct);
        assert_eq!(choose(false, true, true), Choice::Cached);
        assert_eq!(choose(false, true, false), Choice::Cached);
    }
}

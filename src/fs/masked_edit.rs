//! Writing a file the agent sees redacted, without the masks ever reaching the real bytes.
//!
//! A write-open of a masked file gets a handle on a private scratch copy (an unnamed temp
//! file in the store) that holds the *view*: the agent reads its own view and writes into it
//! (`O_TRUNC` and `ftruncate` truncate the scratch copy). A writable handle on the real file
//! would read back raw bytes, and a partial write would mix the agent's bytes with secrets.
//!
//! When the handle is flushed (every `close(2)`) or released, the scratch content is the
//! agent's new version of the view:
//! - snapshot mode: the real file must still be the version the view was made from (blake3);
//!   the agent's change is merged onto the real bytes ([`crate::merge`]), the pre-image is
//!   captured (Guard), and the merged bytes are written in place. An edit that touches a
//!   masked range (or a real file changed meanwhile) is a conflict: the real file stays as it
//!   is, the agent's content is diverted to the overlay for a person (`veilfs diff`, `discard`;
//!   `commit` refuses it for the same reason) and `close(2)` fails with EACCES.
//! - overlay mode: the agent's content goes to the upper layer as written; `veilfs commit`
//!   merges it against the recorded view ([`crate::served`]) and refuses a conflict.
//!
//! A rename over a masked file (how editors, `sed -i` and atomic writers save) is the same
//! edit: in snapshot mode the new file's content is merged against the destination's view and
//! the merged bytes are written into the new file before the rename (EACCES on a conflict); in
//! overlay mode the rename happens as is and commit merges.
//!
//! Every masked view served in a write-capable mount is recorded first ([`ServedViews`]).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fuser::Errno;

use super::inode::Inode;
use super::view::{self, View};
use super::{Handle, VeilFs, errno_of};
use crate::audit;
use crate::backing::{self, Kind, Stat};
use crate::merge;
use crate::redact::{Redactions, Span, mask_all};
use crate::served::ServedViews;

/// Masked edits of one mount.
pub(crate) struct MaskedEdits {
    pub served: ServedViews,
    /// Where scratch copies are made (inside the store: never in the scope or the mount).
    scratch_dir: PathBuf,
    /// Snapshot mode merges into the real file at close; overlay mode leaves it to commit.
    merge_now: bool,
}

impl MaskedEdits {
    pub(crate) fn new(store: &Path, merge_now: bool) -> anyhow::Result<MaskedEdits> {
        let scratch_dir = store.join("masked-edit");
        std::fs::create_dir_all(&scratch_dir)
            .map_err(|e| anyhow::anyhow!("create {}: {e}", scratch_dir.display()))?;
        Ok(MaskedEdits {
            served: ServedViews::in_store(store),
            scratch_dir,
            merge_now,
        })
    }
}

/// One version of a masked file: its bytes, their stat, and their redactions.
type MaskedVersion = (Vec<u8>, Stat, Arc<Redactions>);

/// What an open masked edit is merged against.
struct Base {
    /// The real bytes the view was made from, and their hash.
    real: Vec<u8>,
    real_hash: blake3::Hash,
    /// The view of `real` (what the scratch copy held when the handle was opened, or after the
    /// last successful merge).
    view: Vec<u8>,
    spans: Vec<Span>,
    /// Set after a conflict: later flushes of this handle write the diverted copy.
    diverted: bool,
}

/// The state of a handle on a scratch copy.
pub(crate) struct MaskedEdit {
    base: Mutex<Base>,
    /// Written since the last merge.
    pub dirty: AtomicBool,
}

/// Reads all of `f` from offset 0.
fn read_all(f: &File) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    (&*f).read_to_end(&mut v)?;
    Ok(v)
}

/// Reads the regular file held (O_PATH) by `fd` as one consistent version.
fn read_stable(fd: BorrowedFd<'_>) -> Result<(Vec<u8>, Stat), Errno> {
    for _ in 0..8 {
        let st = backing::stat_fd(fd).map_err(|e| errno_of(&e))?;
        let f = backing::reopen_as(fd, Kind::File, libc::O_RDONLY).map_err(|e| errno_of(&e))?;
        let mut data = Vec::with_capacity(st.size as usize);
        let mut n = 0;
        data.resize(st.size as usize, 0);
        while n < data.len() {
            match f.read_at(&mut data[n..], n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(errno_of(&e)),
            }
        }
        data.truncate(n);
        let after = backing::stat_fd(fd).map_err(|e| errno_of(&e))?;
        if view::file_id(&after) == view::file_id(&st) && n as u64 == st.size {
            return Ok((data, st));
        }
    }
    Err(Errno::EAGAIN)
}

/// Rewrites the file held by `fd` with `bytes`, in place (its inode, and so its other names,
/// mode and owner, stay); never empty in between.
fn write_in_place(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<(), Errno> {
    let f = backing::reopen_as(fd, Kind::File, libc::O_WRONLY).map_err(|e| errno_of(&e))?;
    f.write_all_at(bytes, 0).map_err(|e| errno_of(&e))?;
    f.set_len(bytes.len() as u64).map_err(|e| errno_of(&e))
}

impl VeilFs {
    fn masked_edits(&self) -> Option<&MaskedEdits> {
        self.cfg.masked.as_deref()
    }

    /// The bytes of the file held by `fd` at `rel` and the redactions of exactly that version,
    /// when the agent sees it masked. Decided from the scan cache first: a clean file is never
    /// read here.
    /// `known`: the file's stat from this request's path check, if it made one.
    fn masked_version(
        &self,
        rel: &Path,
        fd: BorrowedFd<'_>,
        known: Option<Stat>,
    ) -> Result<Option<MaskedVersion>, Errno> {
        let st = match known {
            Some(st) => st,
            None => backing::stat_fd(fd).map_err(|e| errno_of(&e))?,
        };
        if !matches!(self.cfg.viewer.decide(rel, fd, &st), View::Masked(_)) {
            return Ok(None);
        }
        let (real, st) = read_stable(fd)?;
        // The version read is the one decided on (a changed file is decided again).
        match self.cfg.viewer.decide(rel, fd, &st) {
            View::Masked(r) => Ok(Some((real, st, r))),
            _ => Ok(None),
        }
    }

    /// Records the masked view of `data`, a consistent copy of version `st` of `rel`, before it
    /// is first served.
    pub(super) fn record_served(
        &self,
        rel: &Path,
        st: &Stat,
        data: &[u8],
        r: &Redactions,
    ) -> Result<(), Errno> {
        let Some(m) = self.masked_edits() else {
            return Ok(());
        };
        let id = view::file_id(st);
        if m.served.seen(rel, id) {
            return Ok(());
        }
        m.served.record(rel, Some(id), data, r).map_err(|e| {
            // Without the record a later commit could not tell masks from edits: fail closed.
            audit::denied(
                "read",
                rel,
                format_args!("cannot record the masked view served: {e:#}"),
            );
            Errno::EIO
        })
    }

    /// A write-open of a file the agent sees masked: a handle on a scratch copy of the view.
    /// None when the file is not masked (or masked edits are off): the caller opens normally.
    /// `rel`: the inode's path from [`VeilFs::write_open_path`], just checked.
    pub(super) fn open_masked_edit(
        &self,
        inode: &Arc<Inode>,
        rel: Option<(&Path, Option<Stat>)>,
        flags: i32,
        who: super::setid::Changer,
    ) -> Result<Option<u64>, Errno> {
        let Some(m) = self.masked_edits() else {
            return Ok(None);
        };
        if inode.kind != Kind::File || inode.is_diverted() {
            return Ok(None);
        }
        // The write path's own checks, so a masked file is never more writable than another.
        let Some((rel, known)) = rel else {
            return Ok(None);
        };
        self.check_writable(rel, "open for write")?;
        let fd = self.fd(inode)?;
        let Some((real, st, r)) = self.masked_version(rel, fd.as_fd(), known)? else {
            return Ok(None);
        };
        m.served
            .record(rel, Some(view::file_id(&st)), &real, &r)
            .map_err(|e| {
                audit::denied(
                    "open for write",
                    rel,
                    format_args!("cannot record the masked view: {e:#}"),
                );
                Errno::EIO
            })?;
        let view = mask_all(&real, &r);
        let scratch = tempfile::tempfile_in(&m.scratch_dir).map_err(|e| errno_of(&e))?;
        if flags & libc::O_TRUNC == 0 {
            scratch.write_all_at(&view, 0).map_err(|e| errno_of(&e))?;
        }
        let edit = MaskedEdit {
            base: Mutex::new(Base {
                real_hash: blake3::hash(&real),
                real,
                view,
                spans: r.spans().to_vec(),
                diverted: false,
            }),
            dirty: AtomicBool::new(flags & libc::O_TRUNC != 0),
        };
        let fh = self.new_fh();
        let h = Arc::new(Handle {
            ino: inode.ino,
            file: scratch,
            writable: true,
            readable: false,
            wrote: AtomicBool::new(false),
            flushed: AtomicBool::new(false),
            io: super::handles::Io::Direct,
            masked: Some(edit),
            // An O_TRUNC open cut the view: the real file's bits go at the merge.
            clear_setid: AtomicBool::new(
                flags & libc::O_TRUNC != 0
                    && super::setid::bits_to_clear(st.mode) != 0
                    && who.clears(),
            ),
        });
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, h);
        let fired = audit::rules_fired(&r);
        audit::emit(&audit::AuditEvent::Open {
            path: rel.to_path_buf(),
            writable: true,
            masked: true,
            rules: fired.0,
            redactions: fired.1,
        });
        Ok(Some(fh))
    }

    /// The attributes of a masked-edit handle: the real file's, with the scratch copy's size.
    pub(super) fn masked_edit_stat(&self, h: &Handle) -> Result<Option<Stat>, Errno> {
        if h.masked.is_none() {
            return Ok(None);
        }
        let inode = self.inode(fuser::INodeNo(h.ino))?;
        let fd = self.fd(&inode)?;
        let mut st = backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?;
        st.size = h.file.metadata().map_err(|e| errno_of(&e))?.len();
        Ok(Some(st))
    }

    /// Applies what the agent wrote through a masked-edit handle (at flush and release).
    pub(super) fn finish_masked_edit(&self, h: &Handle) -> Result<(), Errno> {
        let changing = h.wrote.load(Ordering::Relaxed)
            || h.masked
                .as_ref()
                .is_some_and(|e| e.dirty.load(Ordering::Relaxed));
        let r = self.apply_masked_edit(h);
        // Only a real change: noting an outside writer's ctime as ours would skip the settle.
        if changing && let Ok(inode) = self.inode(fuser::INodeNo(h.ino)) {
            self.note_own_change(&inode);
            if r.is_ok() && h.clear_setid.swap(false, Ordering::Relaxed) {
                let fd = self.fd(&inode)?;
                let st = backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?;
                let who = super::setid::Changer::Told(true);
                self.clear_setid_bits(inode.ino, fd.as_fd(), st, who)?;
            }
        }
        r
    }

    fn apply_masked_edit(&self, h: &Handle) -> Result<(), Errno> {
        let Some(edit) = &h.masked else {
            return Ok(());
        };
        let (wrote, dirty) = (
            h.wrote.swap(false, Ordering::Relaxed),
            edit.dirty.swap(false, Ordering::Relaxed),
        );
        if !wrote && !dirty {
            return Ok(());
        }
        let Some(m) = self.masked_edits() else {
            return Ok(());
        };
        let mut base = edit.base.lock().unwrap_or_else(|e| e.into_inner());
        let new = read_all(&h.file).map_err(|e| errno_of(&e))?;
        let inode = self.inode(fuser::INodeNo(h.ino))?;
        let Some(rel) = self.inodes.rel_path(inode.ino) else {
            // Unlinked meanwhile: nothing left to change.
            return Ok(());
        };
        let fd = self.fd(&inode)?;
        if base.diverted {
            return write_in_place(fd.as_fd(), &new);
        }
        if new == base.view {
            return Ok(());
        }
        // Moved outside the mount since the open: merged there, the edit would change a file
        // whose pre-image (and rollback) are at `rel` (see `moved`).
        if self.changes_real_folder() {
            self.check_still_at(inode.ino, &rel)?;
        }
        let g = self.cfg.guard.as_ref().ok_or(Errno::EROFS)?;
        let (now, _) = read_stable(fd.as_fd())?;
        let merged = if blake3::hash(&now) != base.real_hash {
            Err("the real file changed after the agent opened it".to_string())
        } else {
            merge::merge(&base.view, &new, &base.real, &base.spans).map_err(|c| c.to_string())
        };
        if !m.merge_now {
            // Overlay mode: the upper layer keeps the agent's content; commit merges it.
            if let Err(why) = &merged {
                audit::emit(&audit::AuditEvent::Diverted {
                    path: rel.clone(),
                    reason: format!(
                        "masked edit kept in the overlay; commit will refuse it: {why}"
                    ),
                });
            }
            write_in_place(fd.as_fd(), &new)?;
            g.record_change(&rel, "masked-edit");
            base.view = new;
            return Ok(());
        }
        // Keeps the agent's content aside in the divert layer (the real file is not touched);
        // `veilfs commit` merges it later, or refuses it for the same reason.
        let keep_aside = |why: &str, base: &mut Base| -> Result<bool, Errno> {
            let Some(d) = &self.cfg.divert else {
                return Ok(false);
            };
            let copy = d.divert(fd.as_fd(), &rel).map_err(|e| errno_of(&e))?;
            write_in_place(copy.as_fd(), &new)?;
            g.diverted(&rel, why)
                .map_err(|e| Errno::from_i32(e.errno()))?;
            self.inodes.divert(&inode, copy);
            base.diverted = true;
            Ok(true)
        };
        let mg = match merged {
            Ok(mg) => mg,
            Err(why) => {
                audit::denied(
                    "masked edit",
                    &rel,
                    format_args!("{why} (kept in the overlay for a person: veilfs diff/discard)"),
                );
                keep_aside(&format!("masked edit refused: {why}"), &mut base)?;
                return Err(Errno::EACCES);
            }
        };
        let root = self.inode(fuser::INodeNo(super::inode::ROOT))?;
        let root = self.fd(&root)?;
        // Every name of the file sees the merged bytes: capture them all (or refuse, for names
        // veilfs never saw).
        let st = backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?;
        let names = g.capture_object(root.as_fd(), (st.dev, st.ino), &rel, st.nlink);
        if let Err(e) = &names {
            // As the write path does when a pre-image cannot be stored: divert, or refuse.
            audit::emit(&audit::AuditEvent::Diverted {
                path: rel.clone(),
                reason: format!("masked edit, no snapshot: {e}"),
            });
            return match keep_aside(&e.to_string(), &mut base)? {
                true => Ok(()),
                false => Err(Errno::from_i32(e.errno())),
            };
        }
        g.record_change(&rel, "masked-edit merged");
        write_in_place(fd.as_fd(), &mg.bytes)?;
        if let (Ok(f), Ok(names)) = (
            backing::reopen_as(fd.as_fd(), Kind::File, libc::O_RDONLY),
            &names,
        ) {
            g.post_image(f.as_fd(), names);
        }
        audit::changed("masked-edit merged", &rel);
        base.real_hash = blake3::hash(&mg.bytes);
        base.real = mg.bytes;
        base.spans = mg.spans;
        base.view = new;
        Ok(())
    }

    /// A truncate (without a masked-edit handle) of a file the agent sees masked: the same
    /// rule as an edit, so cutting or removing a masked range is refused (EACCES) and a
    /// truncate that keeps every masked byte, or extends the file, goes through.
    pub(super) fn check_masked_truncate(
        &self,
        ino: fuser::INodeNo,
        size: u64,
    ) -> Result<(), Errno> {
        if self.masked_edits().is_none() {
            return Ok(());
        }
        let inode = self.inode(ino)?;
        if inode.kind != Kind::File || inode.is_diverted() {
            return Ok(());
        }
        let Some(rel) = self.inodes.rel_path(inode.ino) else {
            return Ok(());
        };
        let fd = self.fd(&inode)?;
        let st = backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?;
        let view = self.cfg.viewer.decide(&rel, fd.as_fd(), &st);
        if let View::Synth(_) = view {
            audit::denied("truncate", &rel, view::SYNTH_READ_ONLY);
            return Err(Errno::EACCES);
        }
        if let View::Masked(r) = view
            && let Some(s) = r.spans().iter().find(|s| s.end > size)
        {
            audit::denied(
                "truncate",
                &rel,
                format_args!(
                    "truncating to {size} bytes would cut the masked bytes {}..{} (rule {})",
                    s.start, s.end, s.rule_id
                ),
            );
            return Err(Errno::EACCES);
        }
        Ok(())
    }

    /// Snapshot mode, before `from` is renamed over `to`: when `to` is a file the agent sees
    /// masked, `from`'s content is the agent's new version of that view; merge it onto `to`'s
    /// real bytes and write the result into `from`, so the rename puts real bytes (secrets
    /// kept) under `to`. A conflict refuses the rename.
    pub(super) fn merge_before_rename_over(
        &self,
        sfd: BorrowedFd<'_>,
        sst: &Stat,
        from: &Path,
        npfd: BorrowedFd<'_>,
        newname: &std::ffi::OsStr,
        to: &Path,
    ) -> Result<(), Errno> {
        let Some(m) = self.masked_edits() else {
            return Ok(());
        };
        if !m.merge_now || sst.kind() != Kind::File {
            return Ok(());
        }
        let dfd = backing::lookup(npfd, newname).map_err(|e| errno_of(&e))?;
        let dst = backing::stat_fd(dfd.as_fd()).map_err(|e| errno_of(&e))?;
        if dst.kind() != Kind::File {
            return Ok(());
        }
        let Some((real, _, r)) = self.masked_version(to, dfd.as_fd(), None)? else {
            return Ok(());
        };
        let refuse = |why: &str| {
            audit::denied2("rename over a masked file", from, to, why);
            Errno::EACCES
        };
        if sst.nlink > 1 {
            // Its other names would get the real secrets too.
            return Err(refuse("the new file has other names"));
        }
        let (new, _) = read_stable(sfd)?;
        let view = mask_all(&real, &r);
        let merged = merge::merge(&view, &new, &real, r.spans())
            .map_err(|c| refuse(&format!("{c}; the real file is unchanged")))?;
        let g = self.cfg.guard.as_ref().ok_or(Errno::EROFS)?;
        let root = self.inode(fuser::INodeNo(super::inode::ROOT))?;
        let root = self.fd(&root)?;
        g.capture(root.as_fd(), from).map_err(|e| {
            audit::denied("change", from, &e);
            Errno::from_i32(e.errno())
        })?;
        g.record_change(from, "masked-merge before rename");
        write_in_place(sfd, &merged.bytes)?;
        audit::changed("masked-edit merged before rename", from);
        Ok(())
    }
}

//! The mutating half of the filesystem. In read-only mode (no guard) every entry point answers
//! EROFS before touching anything, so no mode can forget a check. In snapshot mode each entry
//! point: resolves the current relative path(s), asks policy whether they may change (EACCES
//! if not), lets the guard capture the pre-image (refusing the change if it cannot), then makes
//! the change beneath the parent's fd with the caller's ownership.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fuser::{Errno, FileHandle, INodeNo, Request, TimeOrNow};
use tracing::warn;

use super::inode::Inode;
use super::view::View;
use super::{Handle, VeilFs, entry_kind, errno_of};
use crate::audit;
use crate::backing::{self, Kind, SetTime, Stat};
use crate::guard::Guard;
use crate::profile::ApprovalOp;

/// Entries below a renamed directory checked at most (a rename of a bigger tree is refused).
const RENAME_CHECK_BUDGET: usize = 1_000_000;

pub(super) enum NewNode {
    Dir { mode: u32 },
    Node { mode: u32, rdev: u32 },
    Symlink { target: OsString },
    Link { ino: u64 },
}

fn set_time(t: Option<TimeOrNow>) -> SetTime {
    match t {
        None => SetTime::Omit,
        Some(TimeOrNow::Now) => SetTime::Now,
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => SetTime::At(d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let (s, ns) = (d.as_secs() as i64, d.subsec_nanos() as i64);
                if ns == 0 {
                    SetTime::At(-s, 0)
                } else {
                    SetTime::At(-s - 1, 1_000_000_000 - ns)
                }
            }
        },
    }
}

impl VeilFs {
    fn guard(&self) -> Result<&Arc<Guard>, Errno> {
        let g = self.cfg.guard.as_ref().ok_or(Errno::EROFS)?;
        if let Some(t) = self.cfg.breaker.as_ref().and_then(|b| b.state()) {
            crate::audit::denied("change", Path::new(""), &t);
            return Err(Errno::EROFS);
        }
        Ok(g)
    }

    /// Counts a done operation towards the damage breaker; a trip is logged as critical.
    pub(super) fn count(&self, op: crate::breaker::Op) {
        if let Some(b) = &self.cfg.breaker
            && let Some(t) = b.note(op, std::time::Instant::now())
        {
            crate::audit::emit(&crate::audit::AuditEvent::Control {
                action: "breaker-tripped",
                reason: t.to_string(),
            });
        }
    }

    /// Counts an open for reading; refused (EACCES) while a mass-read trip holds.
    pub(super) fn count_read(&self, st: &Stat) -> Result<(), Errno> {
        let Some(b) = &self.cfg.breaker else {
            return Ok(());
        };
        if let Some(t) = b.state().filter(|t| t.stops_reads()) {
            crate::audit::denied("open", Path::new(""), &t);
            return Err(Errno::EACCES);
        }
        self.count(crate::breaker::Op::Read((st.dev, st.ino)));
        // The open that trips the limit is refused too.
        match b.state() {
            Some(t) if t.stops_reads() => Err(Errno::EACCES),
            _ => Ok(()),
        }
    }

    pub(super) fn root_fd(&self) -> Result<Arc<std::os::fd::OwnedFd>, Errno> {
        let root = self.inodes.get(super::inode::ROOT).ok_or(Errno::EIO)?;
        self.fd(&root)
    }

    /// May the agent change `rel`? Policy first, then: hidden names can't be created either.
    pub(super) fn check_writable(&self, rel: &Path, op: &str) -> Result<(), Errno> {
        if !self.cfg.policy.writable(rel) {
            audit::denied(op, rel, "not writable under the profile");
            return Err(Errno::EACCES);
        }
        Ok(())
    }

    /// Holds the request until a person answers, when the profile's `[approval]` asks for
    /// `op` on these paths; refused (EACCES) on a denial or a timeout, EINTR when the caller
    /// was killed or signalled meanwhile. Called after every other check, so a person is only
    /// asked about what would otherwise go through.
    ///
    /// The agent keeps running while a person reads the question, and may rename an ancestor
    /// or swap the object for another. So after an approval `still` must confirm that the
    /// request still names the objects the person was shown, at the paths they were shown
    /// (see [`VeilFs::still_at`]); otherwise nothing is done and the request is refused: an
    /// approval never acts on a different path or object.
    fn approve(
        &self,
        op: ApprovalOp,
        rel: &Path,
        to: Option<&Path>,
        still: impl Fn() -> bool,
    ) -> Result<(), Errno> {
        self.approve_unlocking(None, op, rel, to, still).map(|_| ())
    }

    /// [`Self::approve`] for a caller holding the guard's namespace lock (unlink, rmdir,
    /// rename): the lock is released while the person is asked, so one held request does not
    /// stall every rename and unlink in the mount, and taken again before `still` re-checks.
    fn approve_unlocking<'g>(
        &self,
        held: Option<(&'g Guard, std::sync::MutexGuard<'g, ()>)>,
        op: ApprovalOp,
        rel: &Path,
        to: Option<&Path>,
        still: impl Fn() -> bool,
    ) -> Result<Option<std::sync::MutexGuard<'g, ()>>, Errno> {
        let Some(q) = &self.cfg.approvals else {
            return Ok(held.map(|(_, l)| l));
        };
        let paths: Vec<&Path> = std::iter::once(rel).chain(to).collect();
        if !self.cfg.policy.needs_approval(op, &paths) {
            return Ok(held.map(|(_, l)| l));
        }
        let guard = held.map(|(g, lock)| {
            drop(lock);
            g
        });
        q.ask(op, rel, to).map_err(|r| {
            audit::denied(op.as_str(), rel, format_args!("not approved: {r}"));
            if r.interrupted {
                Errno::EINTR
            } else {
                Errno::EACCES
            }
        })?;
        let relocked = guard.map(Guard::namespace);
        if !still() {
            audit::denied(
                op.as_str(),
                rel,
                "approved, but what it names was renamed or replaced while a person was asked: \
                 nothing was done (ask again)",
            );
            return Err(Errno::EACCES);
        }
        Ok(relocked)
    }

    /// The (device, inode) that `rel` leads to now, resolved from the scope's root one
    /// component at a time, never following a symlink.
    fn leads_to(&self, rel: &Path) -> Option<(u64, u64)> {
        let root = self.root_fd().ok()?;
        let mut cur: Option<std::os::fd::OwnedFd> = None;
        for c in rel.components() {
            let std::path::Component::Normal(n) = c else {
                return None;
            };
            let dir = cur.as_ref().map_or(root.as_fd(), |f| f.as_fd());
            cur = Some(backing::lookup(dir, n).ok()?);
        }
        let st = backing::stat_fd(cur.as_ref().map_or(root.as_fd(), |f| f.as_fd())).ok()?;
        Some((st.dev, st.ino))
    }

    /// Whether the directory `dir` is still at `dir_rel`, and `name` in it is still the object
    /// `want` (or, with `None`, still absent).
    fn still_at(
        &self,
        dir: &std::os::fd::OwnedFd,
        dir_rel: &Path,
        name: &OsStr,
        want: Option<(u64, u64)>,
    ) -> bool {
        let Ok(d) = backing::stat_fd(dir.as_fd()) else {
            return false;
        };
        if self.leads_to(dir_rel) != Some((d.dev, d.ino)) {
            return false;
        }
        match (backing::stat_at(dir.as_fd(), name), want) {
            (Ok(st), Some(w)) => (st.dev, st.ino) == w,
            (Err(e), None) => e.raw_os_error() == Some(libc::ENOENT),
            _ => false,
        }
    }

    /// Whether `rel` still leads to the object of `inode`.
    fn still_is(&self, inode: &Arc<Inode>, rel: &Path) -> bool {
        let Ok(fd) = self.fd(inode) else {
            return false;
        };
        let Ok(st) = backing::stat_fd(fd.as_fd()) else {
            return false;
        };
        self.leads_to(rel) == Some((st.dev, st.ino))
    }

    fn check_new_name_visible(
        &self,
        rel: &Path,
        kind: Kind,
        target: Option<&Path>,
    ) -> Result<(), Errno> {
        if let Err(why) = self.cfg.policy.visibility(rel, entry_kind(kind), 0, target) {
            audit::denied(
                "create",
                rel,
                format_args!("the name would be hidden: {why}"),
            );
            return Err(Errno::EACCES);
        }
        Ok(())
    }

    fn capture(&self, g: &Guard, rel: &Path) -> Result<(), Errno> {
        let root = self.root_fd()?;
        g.capture(root.as_fd(), rel).map_err(|e| {
            audit::denied("change", rel, &e);
            Errno::from_i32(e.errno())
        })
    }

    /// Captures `rel` and its directory (whose entries and times change with every create,
    /// remove and rename in it, so rollback restores its mtime) with one journal fsync.
    fn capture_with_parent(&self, g: &Guard, rel: &Path) -> Result<(), Errno> {
        let root = self.root_fd()?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        g.capture_then(root.as_fd(), &[parent, rel], None)
            .map_err(|e| {
                audit::denied("change", rel, &e);
                Errno::from_i32(e.errno())
            })
    }

    /// Captures a file about to change; when its pre-image cannot be stored and the mount has
    /// a divert layer, diverts it instead (the real file is then never touched). `known`: the
    /// object's stat from this request's path check, if it made one. `mark`: the change's
    /// marker ([`Guard::record_change`]) to journal when the file is not diverted (in the
    /// capture's write, when there is one). `open`: the file open for reading, to read its
    /// pre-image through.
    fn capture_or_divert(
        &self,
        g: &Guard,
        inode: &Arc<Inode>,
        rel: &Path,
        known: Option<Stat>,
        mark: Option<&str>,
        open: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<(), Errno> {
        if inode.is_diverted() {
            return Ok(());
        }
        let root = self.root_fd()?;
        let st = match known {
            Some(st) => st,
            None => backing::stat_fd(self.fd(inode)?.as_fd()).map_err(|e| errno_of(&e))?,
        };
        if st.kind() != Kind::Dir && st.nlink > 1 {
            // A change through one name changes every name: each must be writable and each is
            // captured, or the change is refused (never diverted: the other names would keep
            // showing the real bytes).
            let refuse = |e: crate::guard::GuardError| {
                audit::denied("change", rel, &e);
                Errno::from_i32(e.errno())
            };
            let names = g
                .names_of(root.as_fd(), (st.dev, st.ino), rel, st.nlink)
                .map_err(refuse)?;
            for n in &names {
                self.check_writable(n, "change through another name")?;
            }
            g.capture_object(root.as_fd(), (st.dev, st.ino), rel, st.nlink)
                .map_err(refuse)?;
            if let Some(op) = mark {
                g.record_change(rel, op);
            }
            return Ok(());
        }
        // The object this request's path check found at `rel` (held by the inode since) is
        // captured as it is, without walking the path again.
        let captured = match (known, mark) {
            (Some(st), Some(op)) => {
                let fd = self.fd(inode)?;
                g.capture_for_change(root.as_fd(), rel, Some((fd.as_fd(), &st)), open, op)
            }
            (None, Some(op)) => g.capture_for_change(root.as_fd(), rel, None, None, op),
            (_, None) => g.capture(root.as_fd(), rel),
        };
        let Err(e) = captured else {
            return Ok(());
        };
        let Some(d) = self
            .cfg
            .divert
            .as_ref()
            .filter(|_| inode.kind == Kind::File)
        else {
            audit::denied("change", rel, &e);
            return Err(Errno::from_i32(e.errno()));
        };
        let fd = self.fd(inode)?;
        let copy = d.divert(fd.as_fd(), rel).map_err(|err| {
            audit::denied(
                "change",
                rel,
                format_args!("{e}; cannot divert either: {err}"),
            );
            Errno::from_i32(e.errno())
        })?;
        g.diverted(rel, &e.to_string())
            .map_err(|je| Errno::from_i32(je.errno()))?;
        self.inodes.divert(inode, copy);
        audit::emit(&audit::AuditEvent::Diverted {
            path: rel.to_path_buf(),
            reason: format!("{e} (the real file stays untouched: veilfs diff/commit/discard)"),
        });
        Ok(())
    }

    /// Refuses namespace changes to a diverted path: its real file still sits under its name.
    fn check_not_diverted(&self, rel: &Path) -> Result<(), Errno> {
        if self.cfg.divert.as_ref().is_some_and(|d| d.contains(rel)) {
            audit::denied(
                "change",
                rel,
                "diverted to the overlay: commit or discard it first",
            );
            return Err(Errno::EACCES);
        }
        Ok(())
    }

    /// The current path of an inode that is about to change, or None for an object that no
    /// longer has a name (an open, unlinked file: its pre-image was captured at unlink).
    pub(super) fn changing_path(&self, inode: &Arc<Inode>) -> Result<Option<PathBuf>, Errno> {
        Ok(self.changing_path_stat(inode)?.map(|(p, _)| p))
    }

    /// [`Self::changing_path`], with the stat its check took of the object (see
    /// [`VeilFs::check_still_at`]).
    fn changing_path_stat(
        &self,
        inode: &Arc<Inode>,
    ) -> Result<Option<(PathBuf, Option<Stat>)>, Errno> {
        match self.inodes.rel_path(inode.ino) {
            Some(p) => {
                let st = self.check_still_at(inode.ino, &p)?;
                Ok(Some((p, st)))
            }
            None => {
                let fd = self.fd(inode)?;
                let st = backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?;
                if st.nlink == 0 {
                    Ok(None)
                } else {
                    // Another name leads to it that the table lost (see `no_path_errno`).
                    Err(Errno::ESTALE)
                }
            }
        }
    }

    fn child_path(&self, parent: INodeNo, name: &OsStr) -> Result<(Arc<Inode>, PathBuf), Errno> {
        self.child_path_stat(parent, name)
            .map(|(p, rel, _)| (p, rel))
    }

    /// [`Self::child_path`], with the directory's stat from its path check (None where none
    /// was made, e.g. the root).
    fn child_path_stat(
        &self,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<(Arc<Inode>, PathBuf, Option<Stat>), Errno> {
        backing::check_name(name).map_err(Errno::from_i32)?;
        let p = self.inode(parent)?;
        if p.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let (prel, pst) = self.rel_checked(parent.0)?;
        Ok((p, prel.join(name), pst))
    }

    /// Gives a new object the caller's ownership (the kernel made it as root). In a setgid
    /// directory the group is inherited, as a native filesystem does. `pst`: the directory's
    /// stat from this request's path check, if it made one.
    /// Returns the object's fd (opened beneath `pfd`), for the lookup that follows.
    fn own(
        &self,
        req: &Request,
        pfd: &std::os::fd::OwnedFd,
        pst: Option<Stat>,
        name: &OsStr,
    ) -> Result<std::os::fd::OwnedFd, Errno> {
        let fd = backing::lookup(pfd.as_fd(), name).map_err(|e| errno_of(&e))?;
        self.own_fd(req, pfd, pst, fd.as_fd())?;
        Ok(fd)
    }

    /// [`Self::own`] of a new object already held as `fd` (a created file's handle).
    fn own_fd(
        &self,
        req: &Request,
        pfd: &std::os::fd::OwnedFd,
        pst: Option<Stat>,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(), Errno> {
        let pst = match pst {
            Some(st) => st,
            None => backing::stat_fd(pfd.as_fd()).map_err(|e| errno_of(&e))?,
        };
        let gid = if pst.mode & libc::S_ISGID != 0 {
            pst.gid
        } else {
            req.gid()
        };
        backing::chown(fd, req.uid(), gid).map_err(|e| errno_of(&e))
    }

    /// May the agent change the bytes of the file at `rel`? Only when its view is its content:
    /// writing or resizing a masked file would write masks back or cut a secret until its rule
    /// no longer matches, and a refused file stays refused. Every size- or content-changing
    /// entry point (write-open, truncate, fallocate and copy_file_range need a writable handle)
    /// goes through here.
    /// `known`: the file's stat from this request's path check, if it made one.
    fn check_content_changeable(
        &self,
        rel: &Path,
        inode: &Arc<Inode>,
        op: &str,
        known: Option<Stat>,
    ) -> Result<(), Errno> {
        if inode.kind != Kind::File {
            return Ok(());
        }
        let fd = self.fd(inode)?;
        let st = match known {
            Some(st) => st,
            None => backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?,
        };
        match self.cfg.viewer.decide(rel, fd.as_fd(), &st) {
            View::Raw => Ok(()),
            View::Masked(_) => {
                audit::denied(
                    op,
                    rel,
                    "the agent sees a redacted view of this file; changing it would write the masks back or unmask a secret",
                );
                Err(Errno::EACCES)
            }
            View::Denied(reason) => {
                audit::denied(op, rel, &reason);
                Err(Errno::EACCES)
            }
            View::Synth(_) => {
                audit::denied(op, rel, super::view::SYNTH_READ_ONLY);
                Err(Errno::EACCES)
            }
        }
    }

    /// Asks a person about an open for write (an overwrite with `O_TRUNC`), when the profile
    /// wants it. Called before the masked-edit and the plain write-open paths alike, so an
    /// edit of a masked file asks too; a path the profile does not let change is left to their
    /// refusal.
    pub(super) fn approve_write_open(&self, inode: &Arc<Inode>, flags: i32) -> Result<(), Errno> {
        if self.cfg.approvals.is_none() || self.cfg.guard.is_none() {
            return Ok(());
        }
        let Some(rel) = self.changing_path(inode)? else {
            return Ok(());
        };
        if !self.cfg.policy.writable(&rel) {
            return Ok(());
        }
        let op = if flags & libc::O_TRUNC != 0 {
            ApprovalOp::Overwrite
        } else {
            ApprovalOp::Write
        };
        self.approve(op, &rel, None, || self.still_is(inode, &rel))
    }

    /// The path a write-open acts on ([`Self::changing_path`]), checked once for both the
    /// masked-edit and the plain write path (None: an open, unlinked file).
    /// With the stat its check took of the object, which the write path's checks before any
    /// change use instead of stating it again.
    pub(super) fn write_open_path(
        &self,
        inode: &Arc<Inode>,
    ) -> Result<Option<(PathBuf, Option<Stat>)>, Errno> {
        self.guard()?;
        self.changing_path_stat(inode)
    }

    /// `rel`: the inode's path from [`Self::write_open_path`], just checked (with its stat).
    /// Returns whether the open is deferred, and the handle's backing file when it was opened
    /// here (see below) with the flags it was opened with.
    pub(super) fn prepare_write_open(
        &self,
        req: &Request,
        inode: &Arc<Inode>,
        rel: Option<&(PathBuf, Option<Stat>)>,
        flags: i32,
    ) -> Result<(bool, Option<(std::fs::File, i32)>), Errno> {
        let g = self.guard()?;
        let Some((rel, known)) = rel else {
            return Ok((false, None));
        };
        let (rel, known) = (rel.as_path(), *known);
        self.check_writable(rel, "open for write")?;
        let diverted_before = inode.is_diverted();
        self.check_content_changeable(rel, inode, "open for write", known)?;
        if self.defer_write_open(inode, rel)? {
            if flags & libc::O_TRUNC != 0 {
                let fd = self.fd(inode)?;
                if let Err(e) = backing::truncate(fd.as_fd(), 0)
                    .map_err(|e| errno_of(&e))
                    .and_then(|()| self.truncated_by(req, inode.ino, fd.as_fd(), known))
                {
                    self.deferred_closed(inode.ino);
                    return Err(e);
                }
            }
            return Ok((true, None));
        }
        // A small file's handle is opened before its capture, which reads the pre-image through
        // it: one open of the file instead of two. Opening changes nothing (a truncate is made
        // below, after the capture); the handle is dropped if the file is diverted instead.
        let pre = match known {
            Some(st)
                if !diverted_before
                    && st.kind() == Kind::File
                    && st.nlink == 1
                    && st.size <= crate::store::INLINE_MAX
                    && flags & libc::O_DIRECT == 0 =>
            {
                let open_flags =
                    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC);
                self.open_backing(self.fd(inode)?.as_fd(), open_flags, true)
                    .ok()
            }
            _ => None,
        };
        let readable = pre
            .as_ref()
            .filter(|(_, f)| f & libc::O_ACCMODE != libc::O_WRONLY)
            .map(|(file, _)| file.as_fd());
        // The marker marks any earlier post-image of this path as outdated before the bytes
        // change, so a crash before this handle's release cannot leave a stale post-image
        // behind (which rollback would then report as someone else's change).
        let mark = if flags & libc::O_TRUNC != 0 {
            "open-truncate"
        } else {
            "open-write"
        };
        self.capture_or_divert(g, inode, rel, known, Some(mark), readable)?;
        // The diverted copy, if the file was just diverted.
        let fd = self.fd(inode)?;
        if flags & libc::O_TRUNC != 0 {
            backing::truncate(fd.as_fd(), 0).map_err(|e| errno_of(&e))?;
            self.truncated_by(req, inode.ino, fd.as_fd(), known)?;
        }
        if diverted_before || inode.is_diverted() {
            return Ok((false, None));
        }
        Ok((false, pre))
    }

    /// After the request's process truncated the file `fd` (inode `ino`) at an open: clears
    /// the set-id bits a truncate clears ([`setid`](super::setid)). `known`: a stat of the
    /// file from before the truncate, whose mode it did not change.
    fn truncated_by(
        &self,
        req: &Request,
        ino: u64,
        fd: BorrowedFd<'_>,
        known: Option<Stat>,
    ) -> Result<(), Errno> {
        let st = match known {
            Some(st) => st,
            None => backing::stat_fd(fd).map_err(|e| errno_of(&e))?,
        };
        let who = super::setid::Changer::Process(req.pid());
        self.clear_setid_bits(ino, fd, st, who).map(|_| ())
    }

    pub(super) fn after_write_release(&self, h: &Handle) {
        let Some(g) = self.cfg.guard.as_ref().filter(|g| g.keeps_post_images()) else {
            return;
        };
        if self.inodes.get(h.ino).is_some_and(|i| i.is_diverted()) {
            return;
        }
        if let Some(rel) = self.inodes.rel_path(h.ino) {
            // One stat of the file serves its link count, the post-image's metadata and kind.
            let st = backing::stat_fd(h.file.as_fd());
            let names = match (self.root_fd(), &st) {
                (Ok(root), Ok(st)) if st.nlink > 1 => g
                    .names_of(root.as_fd(), (st.dev, st.ino), &rel, st.nlink)
                    .unwrap_or_else(|_| vec![rel.clone()]),
                _ => vec![rel],
            };
            match (self.root_fd(), &st) {
                (Ok(root), Ok(st)) => {
                    g.post_image_current_as(root.as_fd(), h.file.as_fd(), st, h.readable, &names)
                }
                _ => g.post_image(h.file.as_fd(), &names),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<Stat, Errno> {
        let inode = self.inode(ino)?;
        let fd = self.fd(&inode)?;
        let nothing = mode.is_none()
            && uid.is_none()
            && gid.is_none()
            && size.is_none()
            && atime.is_none()
            && mtime.is_none();
        if nothing {
            return backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e));
        }
        let g = self.guard()?;
        let _q = self.deferred_hold();
        let changing = self.changing_path_stat(&inode)?;
        if let Some((rel, checked)) = changing.clone() {
            self.check_writable(&rel, "setattr")?;
            // With masked edits on, `check_masked_truncate` already refused any cut into a
            // masked range (a truncate that keeps every secret whole may go through).
            if size.is_some() && self.cfg.masked.is_none() {
                self.check_content_changeable(&rel, &inode, "truncate", checked)?;
            }
            let op = if size.is_some() {
                ApprovalOp::Overwrite
            } else if mode.is_some() {
                ApprovalOp::Chmod
            } else {
                ApprovalOp::Write
            };
            self.approve(op, &rel, None, || self.still_is(&inode, &rel))?;
            // After a person's answer the object may have changed: stat it again then.
            let known = checked.filter(|_| self.cfg.approvals.is_none());
            self.capture_or_divert(g, &inode, &rel, known, Some("setattr"), None)?;
        }
        // The diverted copy, if the file was just diverted.
        let fd = self.fd(&inode)?;
        // A masked edit's handle was cut: its scratch copy, not the real file.
        let mut truncated_scratch = false;
        if let Some(size) = size {
            if self
                .cfg
                .breaker
                .as_ref()
                .is_some_and(|b| b.counts_overwrites())
            {
                let old = backing::stat_fd(fd.as_fd()).map_or(0, |st| st.size);
                self.count(crate::breaker::Op::Overwrite(old.saturating_sub(size)));
            }
            let h = fh.and_then(|fh| self.handle(fh, ino).ok());
            match h {
                Some(h) if h.writable => {
                    h.file.set_len(size).map_err(|e| errno_of(&e))?;
                    h.wrote.store(true, Ordering::Relaxed);
                    if h.masked.is_some() {
                        let who = super::setid::Changer::Process(req.pid());
                        h.clear_setid.fetch_or(who.clears(), Ordering::Relaxed);
                        truncated_scratch = true;
                    }
                }
                _ => backing::truncate(fd.as_fd(), size).map_err(|e| errno_of(&e))?,
            }
        }
        if uid.is_some() || gid.is_some() {
            backing::chown(fd.as_fd(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))
                .map_err(|e| errno_of(&e))?;
        }
        if let Some(mode) = mode {
            backing::chmod_as(fd.as_fd(), inode.kind, mode & 0o7777).map_err(|e| errno_of(&e))?;
        }
        if atime.is_some() || mtime.is_some() {
            let (a, m) = (set_time(atime), set_time(mtime));
            if inode.kind == Kind::Symlink {
                let loc = inode.location();
                let parent = self.inodes.get(loc.parent).ok_or(Errno::ESTALE)?;
                let pfd = self.fd(&parent)?;
                backing::utimens_at(pfd.as_fd(), &loc.name, a, m)
            } else {
                backing::utimens_fd(fd.as_fd(), a, m)
            }
            .map_err(|e| errno_of(&e))?;
        }
        let mut st = backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?;
        self.copies.note_own_change(&st);
        // A truncate clears set-id bits, unless the same request sets the mode (the kernel
        // never sends both).
        if size.is_some() && mode.is_none() && !truncated_scratch {
            let who = super::setid::Changer::Process(req.pid());
            st = self.clear_setid_bits(inode.ino, fd.as_fd(), st, who)?;
        }
        if let Some((rel, _)) = changing {
            let op = if size.is_some() {
                "truncate"
            } else if mode.is_some() {
                "chmod"
            } else if uid.is_some() || gid.is_some() {
                "chown"
            } else {
                "utimens"
            };
            audit::changed(op, &rel);
        }
        Ok(st)
    }

    /// A name about to be created already exists: EEXIST when the agent can see it, EACCES
    /// (like a name the profile denies) when it is hidden, so a probe cannot tell a hidden
    /// entry from a denied name.
    fn exists_error(&self, pfd: &std::os::fd::OwnedFd, rel: &Path, name: &OsStr) -> Errno {
        match self.visible_child(pfd, rel, name) {
            Ok(_) => Errno::EEXIST,
            Err(_) => {
                audit::denied("create", rel, "a hidden entry has this name");
                Errno::EACCES
            }
        }
    }

    /// Checks that a new hard link to `src` gives it no looser view or write rights: the
    /// object must be changeable under every name it has, and its view must be its content
    /// (a masked or refused file gets no second name). Returns its current path and its stat
    /// (taken by the path check, or here).
    fn check_link_source(
        &self,
        src: &Arc<Inode>,
        new: &Path,
    ) -> Result<Option<(PathBuf, Stat)>, Errno> {
        let Some((from, checked)) = self.changing_path_stat(src)? else {
            // An open file with no name left (O_TMPFILE, or unlinked): only the agent's own
            // bytes, written in this session.
            return Ok(None);
        };
        let g = self.guard()?;
        let fd = self.fd(src)?;
        let st = match checked {
            Some(st) => st,
            None => backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?,
        };
        let root = self.root_fd()?;
        let names = g
            .names_of(root.as_fd(), (st.dev, st.ino), &from, st.nlink)
            .map_err(|e| {
                audit::denied("link", &from, &e);
                Errno::EACCES
            })?;
        for n in &names {
            self.check_writable(n, "link")?;
        }
        if st.kind() == Kind::File {
            for at in [from.as_path(), new] {
                if !matches!(self.cfg.viewer.decide(at, fd.as_fd(), &st), View::Raw) {
                    audit::denied2(
                        "link",
                        &from,
                        new,
                        "the file is redacted or refused: it may not get another name",
                    );
                    return Err(Errno::EACCES);
                }
            }
        }
        Ok(Some((from, st)))
    }

    pub(super) fn do_create_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        node: NewNode,
    ) -> Result<(Arc<Inode>, Stat), Errno> {
        let g = self.guard()?;
        let (p, rel, pst) = self.child_path_stat(parent, name)?;
        let (kind, target) = match &node {
            NewNode::Dir { .. } => (Kind::Dir, None),
            NewNode::Node { mode, .. } => (Kind::from_mode(*mode), None),
            NewNode::Symlink { target } => (Kind::Symlink, Some(PathBuf::from(target))),
            NewNode::Link { ino } => {
                let src = self.inodes.get(*ino).ok_or(Errno::ESTALE)?;
                // A linked symlink is judged by its own target at its new place.
                let target = match src.kind {
                    Kind::Symlink => Some(PathBuf::from(
                        backing::readlink_fd(self.fd(&src)?.as_fd()).map_err(|e| errno_of(&e))?,
                    )),
                    _ => None,
                };
                (src.kind, target)
            }
        };
        self.check_writable(&rel, "create")?;
        self.check_new_name_visible(&rel, kind, target.as_deref())?;
        let pfd = self.fd(&p)?;
        // An existing name fails like a native filesystem, before anything is journalled.
        if backing::stat_at(pfd.as_fd(), name).is_ok() {
            return Err(self.exists_error(&pfd, &rel, name));
        }
        let src_rel = match &node {
            NewNode::Link { ino } => self.inodes.rel_path(*ino),
            _ => None,
        };
        let _q = match (&node, &src_rel) {
            (NewNode::Link { .. }, Some(s)) => {
                self.deferred_quiesce(&[s.as_path(), rel.as_path()])?
            }
            (NewNode::Link { .. }, None) => self.deferred_quiesce(&[rel.as_path()])?,
            _ => None,
        };
        let link_from = match &node {
            NewNode::Link { ino } => {
                let src = self.inodes.get(*ino).ok_or(Errno::ESTALE)?;
                self.check_link_source(&src, &rel)?
            }
            _ => None,
        };
        let kind = match node {
            NewNode::Link { .. } => ApprovalOp::Link,
            _ => ApprovalOp::Write,
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        self.approve(kind, &rel, None, || {
            self.still_at(&pfd, parent_rel, name, None)
        })?;
        self.capture_with_parent(g, &rel)?;
        let (op, held) = match node {
            NewNode::Dir { mode } => {
                backing::mkdir(pfd.as_fd(), name, mode).map_err(|e| errno_of(&e))?;
                g.made_dir(&rel);
                ("mkdir", Some(self.own(req, &pfd, pst, name)?))
            }
            NewNode::Node { mode, rdev }
                if self.cfg.emulate_dev0 && mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 =>
            {
                let f = backing::create_file(pfd.as_fd(), name, libc::O_WRONLY, mode & 0o7777)
                    .map_err(|e| errno_of(&e))?;
                backing::setxattr(f.as_fd(), OsStr::new(crate::overlay::DEV0_XATTR), b"1", 0)
                    .map_err(|e| errno_of(&e))?;
                ("mknod", Some(self.own(req, &pfd, pst, name)?))
            }
            NewNode::Node { mode, rdev } => {
                backing::mknod(pfd.as_fd(), name, mode, rdev as u64).map_err(|e| errno_of(&e))?;
                ("mknod", Some(self.own(req, &pfd, pst, name)?))
            }
            NewNode::Symlink { target } => {
                backing::symlink(pfd.as_fd(), name, &target).map_err(|e| errno_of(&e))?;
                ("symlink", Some(self.own(req, &pfd, pst, name)?))
            }
            NewNode::Link { ino } => {
                let src = self.inodes.get(ino).ok_or(Errno::ESTALE)?;
                let sfd = self.fd(&src)?;
                backing::link(sfd.as_fd(), pfd.as_fd(), name).map_err(|e| errno_of(&e))?;
                // A link keeps the object's identity: the source's stat from before names it.
                if let Some((from, st)) = &link_from {
                    g.linked((st.dev, st.ino), from, &rel);
                }
                ("link", None)
            }
        };
        g.record_change(&rel, op);
        audit::changed(op, &rel);
        self.lookup_child_held(&p, name, rel, held)
    }

    pub(super) fn do_remove(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        dir: bool,
    ) -> Result<(), Errno> {
        let g = self.guard()?;
        let ns = g.namespace();
        let (p, rel) = self.child_path(parent, name)?;
        let _q = self.deferred_quiesce(&[rel.as_path()])?;
        let pfd = self.fd(&p)?;
        // Only visible names can be removed; a hidden one does not exist for the agent.
        let (fd, st) = self.visible_child(&pfd, &rel, name)?;
        if dir && st.kind() != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if !dir && st.kind() == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        self.check_writable(&rel, if dir { "rmdir" } else { "unlink" })?;
        self.check_not_diverted(&rel)?;
        if dir
            && !backing::list_dir(fd.as_fd())
                .map_err(|e| errno_of(&e))?
                .is_empty()
        {
            // Refused the same way whatever hides the entries, and never ENOTEMPTY for a
            // directory the agent sees as empty (that would reveal them).
            let shown = self
                .inodes
                .ino_of_key((st.dev, st.ino))
                .map(|ino| self.list_visible(ino).map(|l| l.is_empty()));
            let only_hidden = match shown {
                Some(r) => r?,
                None => self.lists_empty(&rel, &fd)?,
            };
            if only_hidden {
                audit::denied(
                    "rmdir",
                    &rel,
                    "the directory holds entries hidden by the profile",
                );
                return Err(Errno::EACCES);
            }
            return Err(Errno::ENOTEMPTY);
        }
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let _ns = self.approve_unlocking(Some((g, ns)), ApprovalOp::Delete, &rel, None, || {
            self.still_at(&pfd, parent_rel, name, Some((st.dev, st.ino)))
        })?;
        let parked = self.remove_aside(g, &pfd, &rel, name, (&fd, &st))?;
        if !parked {
            self.capture_with_parent(g, &rel)?;
            let r = if dir {
                backing::rmdir(pfd.as_fd(), name)
            } else {
                backing::unlink(pfd.as_fd(), name)
            };
            r.map_err(|e| errno_of(&e))?;
        }
        g.forget_subtree(&rel);
        if !dir {
            g.unlinked((st.dev, st.ino), &rel);
        }
        g.record_change(&rel, if dir { "rmdir" } else { "unlink" });
        audit::changed(if dir { "rmdir" } else { "unlink" }, &rel);
        if let Some(ino) = self.inodes.ino_of_key((st.dev, st.ino))
            && let Some(i) = self.inodes.get(ino)
        {
            if parked {
                self.inodes.mark_parked(&i);
            }
            let loc = i.location();
            if loc.parent == parent.0 && loc.name == name {
                i.detach_from(&rel);
            }
        }
        Ok(())
    }

    /// Removes a file by parking it in the store's aside area (see `aside.rs`), without a
    /// journal fsync, when that is safe: a small regular file (its pre-image travels inline in
    /// the journal, so the parked file is redundant once a sync covers it) or a symlink, with
    /// one link (another name would keep sharing and changing the parked inode), held open for
    /// writing by no handle of the agent's. False when it was not removed that way.
    /// `obj`: `name` as this request found it beneath `pfd` (an fd and its stat), which is
    /// what the guard captures and checks that it moves.
    fn remove_aside(
        &self,
        g: &Guard,
        pfd: &std::os::fd::OwnedFd,
        rel: &Path,
        name: &OsStr,
        obj: (&std::os::fd::OwnedFd, &Stat),
    ) -> Result<bool, Errno> {
        let (fd, st) = obj;
        let small_file = st.kind() == Kind::File && st.size <= crate::store::INLINE_MAX;
        if !(small_file || st.kind() == Kind::Symlink) || st.nlink != 1 {
            return Ok(false);
        }
        if let Some(ino) = self.inodes.ino_of_key((st.dev, st.ino))
            && self.write_handles(ino).0 > 0
        {
            return Ok(false);
        }
        // After a person's answer the object may have changed (not its identity: the approval
        // checked that): stat it again then.
        let fresh;
        let st = if self.cfg.approvals.is_some() {
            fresh = backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?;
            &fresh
        } else {
            st
        };
        let root = self.root_fd()?;
        g.remove_aside(root.as_fd(), pfd.as_fd(), rel, name, (fd.as_fd(), st))
            .map_err(|e| {
                audit::denied("unlink", rel, &e);
                Errno::from_i32(e.errno())
            })
    }

    pub(super) fn do_rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        let g = self.guard()?;
        let ns = g.namespace();
        if flags & libc::RENAME_WHITEOUT != 0 {
            return Err(Errno::EINVAL);
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let (p, from) = self.child_path(parent, name)?;
        let (np, to) = self.child_path(newparent, newname)?;
        let _q = self.deferred_quiesce(&[from.as_path(), to.as_path()])?;
        let pfd = self.fd(&p)?;
        let npfd = self.fd(&np)?;
        let sfd = backing::lookup(pfd.as_fd(), name).map_err(|e| errno_of(&e))?;
        let sst = backing::stat_fd(sfd.as_fd()).map_err(|e| errno_of(&e))?;
        self.visible(&from, &sst, Some(&sfd))?;
        let dst = match backing::lookup(npfd.as_fd(), newname) {
            Ok(fd) => {
                let st = backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?;
                // A hidden destination does not exist for the agent, and must not be
                // replaced by it either.
                if self.visible(&to, &st, Some(&fd)).is_err() {
                    audit::denied("rename", &to, "destination is hidden");
                    return Err(Errno::EACCES);
                }
                Some(st)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => return Err(errno_of(&e)),
        };
        if exchange && dst.is_none() {
            return Err(Errno::ENOENT);
        }
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        let target = if sst.kind() == Kind::Symlink {
            backing::readlink_fd(sfd.as_fd()).ok().map(PathBuf::from)
        } else {
            None
        };
        self.check_new_name_visible(&to, sst.kind(), target.as_deref())?;
        self.check_writable(&from, "rename")?;
        self.check_writable(&to, "rename")?;
        self.check_not_looser(&from, &to, &sfd, &sst)?;
        if exchange
            && let Ok(dfd) = backing::lookup(npfd.as_fd(), newname)
            && let Ok(dst_st) = backing::stat_fd(dfd.as_fd())
        {
            let t = if dst_st.kind() == Kind::Symlink {
                backing::readlink_fd(dfd.as_fd()).ok().map(PathBuf::from)
            } else {
                None
            };
            self.check_new_name_visible(&from, dst_st.kind(), t.as_deref())?;
            self.check_not_looser(&to, &from, &dfd, &dst_st)?;
        }
        self.check_not_diverted(&from)?;
        self.check_not_diverted(&to)?;
        let dst_id = dst.as_ref().map(|d| (d.dev, d.ino));
        let _ns =
            self.approve_unlocking(Some((g, ns)), ApprovalOp::Rename, &from, Some(&to), || {
                let (fp, tp) = (
                    from.parent().unwrap_or(Path::new("")),
                    to.parent().unwrap_or(Path::new("")),
                );
                self.still_at(&pfd, fp, name, Some((sst.dev, sst.ino)))
                    && self.still_at(&npfd, tp, newname, dst_id)
            })?;
        if let Some(d) = &dst {
            // Errors a native rename gives, checked before anything is journalled.
            match (sst.kind() == Kind::Dir, d.kind() == Kind::Dir) {
                _ if exchange => {}
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                _ => {}
            }
            if (d.dev, d.ino) == (sst.dev, sst.ino) {
                // Renaming onto another name of the same file is a no-op.
                return Ok(());
            }
            // Saving over a file the agent sees masked: merge (masked_edit.rs).
            if !exchange {
                self.merge_before_rename_over(
                    sfd.as_fd(),
                    &sst,
                    &from,
                    npfd.as_fd(),
                    newname,
                    &to,
                )?;
            }
        }
        // Both directories, the replaced object (its content is destroyed by the rename) and a
        // moved directory (its times change; its content is not copied, only metadata), then
        // the intent: one journal fsync for all.
        let root = self.root_fd()?;
        let mut rels = vec![
            from.parent().unwrap_or(Path::new("")),
            to.parent().unwrap_or(Path::new("")),
        ];
        if dst.is_some() {
            rels.push(&to);
        }
        if sst.kind() == Kind::Dir {
            rels.push(&from);
        }
        g.capture_for_rename(root.as_fd(), &rels, &from, &to, exchange)
            .map_err(|e| {
                audit::denied("rename", &from, &e);
                Errno::from_i32(e.errno())
            })?;
        backing::rename(pfd.as_fd(), name, npfd.as_fd(), newname, flags)
            .map_err(|e| errno_of(&e))?;
        // A moved file's bytes are not copied: instead neither name counts as captured any
        // more, so the first change at either name captures what is there then, and rollback
        // (which replays backwards) restores it before it undoes the rename. Renaming a huge
        // file costs nothing.
        g.forget_subtree(&from);
        g.forget_subtree(&to);
        g.renamed(&from, &to, exchange);
        audit::emit(&audit::AuditEvent::Renamed {
            from: from.clone(),
            to: to.clone(),
            exchange,
        });
        // Keep our idea of where things are in step with the real folder.
        if let Some(ino) = self.inodes.ino_of_key((sst.dev, sst.ino))
            && let Some(i) = self.inodes.get(ino)
        {
            i.set_location(newparent.0, newname);
            self.note_own_change(&i);
        }
        if let Some(d) = dst
            && let Some(ino) = self.inodes.ino_of_key((d.dev, d.ino))
            && let Some(i) = self.inodes.get(ino)
        {
            if exchange {
                i.set_location(parent.0, name);
                self.note_own_change(&i);
            } else {
                i.detach_from(&to);
            }
        }
        Ok(())
    }

    pub(super) fn do_create_file(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(Arc<Inode>, Stat, u64), Errno> {
        let g = self.guard()?;
        let (p, rel, pst) = self.child_path_stat(parent, name)?;
        self.check_writable(&rel, "create")?;
        self.check_new_name_visible(&rel, Kind::File, None)?;
        let pfd = self.fd(&p)?;
        if backing::stat_at(pfd.as_fd(), name).is_ok() {
            if flags & libc::O_EXCL != 0 || self.visible_child(&pfd, &rel, name).is_err() {
                return Err(self.exists_error(&pfd, &rel, name));
            }
            // The kernel sends create for O_CREAT without O_EXCL on a name it had no entry
            // for; the file exists after all: open it like open(2) would.
            let (inode, _) = self.do_lookup(parent.0, name)?;
            return match self.open_existing(req, &inode, &rel, flags) {
                Ok((st, fh)) => Ok((inode, st, fh)),
                Err(e) => {
                    // An error reply gives the kernel no entry: the lookup is not counted.
                    self.inodes.forget(inode.ino, 1);
                    Err(e)
                }
            };
        }
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        self.approve(ApprovalOp::Write, &rel, None, || {
            self.still_at(&pfd, parent_rel, name, None)
        })?;
        self.capture_with_parent(g, &rel)?;
        // Opened for reading too, whatever the agent asked: its post-image is then read
        // through this handle at release (no reopen). The file is new (O_EXCL), so reading is
        // granted whatever its mode; the agent's own descriptor keeps the access it asked for
        // (the kernel checks it), and veilfs reads the handle only for the post-image.
        let flags = match flags & libc::O_ACCMODE {
            libc::O_WRONLY => (flags & !libc::O_ACCMODE) | libc::O_RDWR,
            _ => flags,
        };
        let file = backing::create_file(pfd.as_fd(), name, flags & !libc::O_TRUNC, mode)
            .map_err(|e| errno_of(&e))?;
        self.own_fd(req, &pfd, pst, file.as_fd())?;
        g.record_change(&rel, "create");
        audit::changed("create", &rel);
        let (inode, st) = self.lookup_child(&p, name, rel)?;
        self.note_open(&inode, &st, true);
        let (io, _) = self.register_io(inode.ino, false, super::handles::no_backing);
        let fh = self.insert_handle(&inode, file, flags, true, io);
        Ok((inode, st, fh))
    }

    /// CREATE of a name that exists: opens `inode` (at `rel`) as open(2) would.
    fn open_existing(
        &self,
        req: &Request,
        inode: &Arc<Inode>,
        rel: &Path,
        flags: i32,
    ) -> Result<(Stat, u64), Errno> {
        // The kernel asks for write access only after this reply (see `exec`).
        self.check_not_executing(inode, flags, false)?;
        let wants_write = (flags & libc::O_ACCMODE) != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if wants_write {
            self.approve_write_open(inode, flags)?;
        }
        let wrel = if wants_write {
            self.write_open_path(inode)?
        } else {
            None
        };
        // A masked file is edited through a scratch copy of its view (masked_edit.rs).
        let who = super::setid::Changer::Process(req.pid());
        if wants_write
            && let Some(fh) = self.open_masked_edit(
                inode,
                wrel.as_ref().map(|w| (w.0.as_path(), w.1)),
                flags,
                who,
            )?
        {
            let h = self.handle(FileHandle(fh), INodeNo(inode.ino))?;
            let st = self.masked_edit_stat(&h)?.ok_or(Errno::EIO)?;
            return Ok((st, fh));
        }
        let (deferred, pre) = if wants_write {
            self.prepare_write_open(req, inode, wrel.as_ref(), flags)?
        } else {
            (false, None)
        };
        let opened = (|| {
            let fd = self.fd(inode)?;
            let st = backing::stat_fd(fd.as_fd()).map_err(|e| errno_of(&e))?;
            // A read-only open of it is refused as open(2) would refuse it; reads mask.
            if !wants_write
                && let View::Denied(reason) = self.cfg.viewer.decide(rel, fd.as_fd(), &st)
            {
                audit::denied("read", rel, &reason);
                return Err(Errno::EACCES);
            }
            let open_flags =
                flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC);
            let file = match pre {
                Some((file, _)) => file,
                None => backing::reopen(fd.as_fd(), open_flags).map_err(|e| errno_of(&e))?,
            };
            Ok((st, file))
        })();
        let (st, file) = match opened {
            Ok(o) => o,
            Err(e) => {
                if deferred {
                    self.deferred_closed(inode.ino);
                }
                return Err(e);
            }
        };
        self.note_open(inode, &st, wants_write);
        let (io, _) = self.register_io(inode.ino, false, super::handles::no_backing);
        let fh = self.insert_handle(inode, file, flags, wants_write, io);
        Ok((st, fh))
    }

    pub(super) fn do_write(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        who: super::setid::Changer,
    ) -> Result<u32, Errno> {
        self.guard()?;
        let h = self.handle(fh, ino)?;
        if !h.writable {
            return Err(Errno::EBADF);
        }
        self.check_handle_still_at(&h)?;
        if self
            .cfg
            .breaker
            .as_ref()
            .is_some_and(|b| b.counts_overwrites())
        {
            let old = h.file.metadata().map_or(0, |m| m.len());
            let end = (offset + data.len() as u64).min(old);
            self.count(crate::breaker::Op::Overwrite(end.saturating_sub(offset)));
        }
        let mut n = 0;
        while n < data.len() {
            match h.file.write_at(&data[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if n > 0 => {
                    warn!("short write: {e}");
                    break;
                }
                Err(e) => return Err(errno_of(&e)),
            }
        }
        self.wrote_through(&h, who)?;
        Ok(n as u32)
    }

    /// After a change of the bytes through handle `h` by `who`: marks the handle written,
    /// notes the change as veilfs's own, and clears the set-id bits it clears ([`setid`]; a
    /// masked edit's when it is merged into the real file).
    ///
    /// [`setid`]: super::setid
    fn wrote_through(&self, h: &Handle, who: super::setid::Changer) -> Result<(), Errno> {
        h.wrote.store(true, Ordering::Relaxed);
        let Ok(st) = backing::stat_fd(h.file.as_fd()) else {
            return Ok(());
        };
        self.copies.note_own_change(&st);
        if super::setid::bits_to_clear(st.mode) == 0 && h.masked.is_none() {
            return Ok(());
        }
        if h.masked.is_some() {
            // The scratch copy's mode means nothing: the real file's is checked at the merge.
            h.clear_setid.fetch_or(who.clears(), Ordering::Relaxed);
            return Ok(());
        }
        self.clear_setid_bits(h.ino, h.file.as_fd(), st, who)
            .map(|_| ())
    }

    /// A change through the open file `h` goes only to a file still at the path its pre-image
    /// was captured at (and its post-image will be recorded at), or ESTALE: one moved outside
    /// the mount since the open would be changed where rollback cannot undo it (see
    /// [`moved`](super::moved)). A masked edit writes its scratch copy (merged at close,
    /// where the path is checked); a file that lost its name through the mount had its
    /// pre-image captured then.
    /// Overlay mode has nothing to check: a change lands in the upper layer, and overlayfs
    /// keeps the names it resolved (a copy-up there may even give a hard-linked file a new
    /// inode number, which the check would take for a move).
    fn check_handle_still_at(&self, h: &Handle) -> Result<(), Errno> {
        if h.masked.is_some() || !self.changes_real_folder() {
            return Ok(());
        }
        match self.inodes.rel_path(h.ino) {
            Some(rel) => self.check_still_at(h.ino, &rel).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Snapshot mode: the agent's changes reach the real folder (see [`Guard::changes_real_folder`]).
    pub(super) fn changes_real_folder(&self) -> bool {
        self.cfg
            .guard
            .as_ref()
            .is_some_and(|g| g.changes_real_folder())
    }

    /// Records that veilfs itself just changed `inode` (its new ctime is not an outside
    /// writer's: see `served`).
    pub(super) fn note_own_change(&self, inode: &Arc<Inode>) {
        if let Ok(fd) = self.fd(inode) {
            self.note_own_change_of(fd.as_fd());
        }
    }

    pub(super) fn note_own_change_of(&self, fd: std::os::fd::BorrowedFd<'_>) {
        if let Ok(st) = backing::stat_fd(fd) {
            self.copies.note_own_change(&st);
        }
    }

    pub(super) fn do_fallocate(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        who: super::setid::Changer,
    ) -> Result<(), Errno> {
        self.guard()?;
        let h = self.handle(fh, ino)?;
        if !h.writable {
            return Err(Errno::EBADF);
        }
        self.check_handle_still_at(&h)?;
        // The mode bits go to the kernel as the caller gave them (it answers unknown ones).
        let mode = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
        if let Err(e) = rustix::fs::fallocate(&h.file, mode, offset, length) {
            return Err(errno_of(&std::io::Error::from(e)));
        }
        self.wrote_through(&h, who)
    }

    pub(super) fn do_setxattr(
        &self,
        ino: INodeNo,
        name: &OsStr,
        value: Option<&[u8]>,
        flags: i32,
    ) -> Result<(), Errno> {
        let g = self.guard()?;
        let _q = self.deferred_hold();
        let inode = self.inode(ino)?;
        let fd = self.fd(&inode)?;
        let changing = self.changing_path(&inode)?;
        if let Some(rel) = changing.clone() {
            self.check_writable(&rel, "setxattr")?;
            // Fail like native before journalling: removing a missing attribute.
            if value.is_none() && backing::getxattr_as(fd.as_fd(), inode.kind, name, 0).is_err() {
                return Err(Errno::NO_XATTR);
            }
            // xattrs belong to the object: a file with several names is captured under all.
            let multi = inode.kind == Kind::File
                && backing::stat_fd(fd.as_fd()).is_ok_and(|st| st.nlink > 1);
            if multi {
                self.capture_or_divert(g, &inode, &rel, None, None, None)?;
            } else {
                self.capture(g, &rel)?;
            }
            g.record_change(
                &rel,
                if value.is_some() {
                    "setxattr"
                } else {
                    "removexattr"
                },
            );
        }
        let fd = self.fd(&inode)?;
        match value {
            Some(v) => backing::setxattr(fd.as_fd(), name, v, flags),
            None => backing::removexattr(fd.as_fd(), name),
        }
        .map_err(|e| errno_of(&e))?;
        self.note_own_change_of(fd.as_fd());
        if let Some(rel) = changing {
            audit::changed(
                if value.is_some() {
                    "setxattr"
                } else {
                    "removexattr"
                },
                &rel,
            );
        }
        Ok(())
    }

    /// A directory with no inode of ours yet: does it list empty for the agent?
    fn lists_empty(&self, rel: &Path, fd: &std::os::fd::OwnedFd) -> Result<bool, Errno> {
        for e in backing::list_dir(fd.as_fd()).map_err(|e| errno_of(&e))? {
            if self.visible_child(fd, &rel.join(&e.name), &e.name).is_ok() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A rename may never loosen what the agent sees or may change of what moves: the object
    /// itself, and for a directory everything below it. Content-aware for a file (its view at
    /// the new name must mask at least what the old one did); by rules for a directory's
    /// entries (visibility, writability, the redaction rules that apply, unscannable serving,
    /// symlinks that would start to escape).
    fn check_not_looser(
        &self,
        from: &Path,
        to: &Path,
        fd: &std::os::fd::OwnedFd,
        st: &Stat,
    ) -> Result<(), Errno> {
        let why = match st.kind() {
            Kind::File if !self.cfg.viewer.at_least_as_strict(from, to, fd.as_fd(), st) => {
                Some("its view at the new name would show more than at the old one".to_string())
            }
            Kind::Dir => {
                let mut budget = RENAME_CHECK_BUDGET;
                self.subtree_loosens(fd, from, to, &mut budget)
            }
            _ => None,
        };
        match why {
            Some(reason) => {
                audit::denied2(
                    "rename",
                    from,
                    to,
                    format_args!("it would loosen the view: {reason}"),
                );
                Err(Errno::EACCES)
            }
            None => Ok(()),
        }
    }

    fn subtree_loosens(
        &self,
        dir: &std::os::fd::OwnedFd,
        from: &Path,
        to: &Path,
        budget: &mut usize,
    ) -> Option<String> {
        // One generation of the policy for the whole comparison.
        let cur = self.cfg.policy.current();
        let policy = &cur.policy;
        let entries = match backing::list_dir(dir.as_fd()) {
            Ok(e) => e,
            Err(e) => return Some(format!("{}: cannot list it to check: {e}", from.display())),
        };
        for e in entries {
            if *budget == 0 {
                return Some("too many entries below it to check".into());
            }
            *budget -= 1;
            let (a, b) = (from.join(&e.name), to.join(&e.name));
            let Ok(cfd) = backing::lookup(dir.as_fd(), &e.name) else {
                continue;
            };
            let Ok(cst) = backing::stat_fd(cfd.as_fd()) else {
                continue;
            };
            let kind = super::entry_kind(cst.kind());
            let target = if cst.kind() == Kind::Symlink {
                backing::readlink_fd(cfd.as_fd()).ok().map(PathBuf::from)
            } else {
                None
            };
            let seen_a = policy
                .visibility(&a, kind, cst.size, target.as_deref())
                .is_ok();
            let seen_b = policy
                .visibility(&b, kind, cst.size, target.as_deref())
                .is_ok();
            if !seen_a {
                if seen_b {
                    return Some(format!(
                        "{} is hidden and would become visible",
                        a.display()
                    ));
                }
                continue; // hidden at both places, and so is everything below it
            }
            if !policy.writable(&a) && policy.writable(&b) {
                return Some(format!(
                    "{} is read-only and would become writable",
                    a.display()
                ));
            }
            if let Some(t) = &target
                && !crate::policy::symlink_escapes(&a, t)
                && crate::policy::symlink_escapes(&b, t)
            {
                // Hidden from the agent there, but planted in the real folder for everyone else.
                return Some(format!(
                    "the symlink {} would point outside the scope",
                    a.display()
                ));
            }
            match cst.kind() {
                Kind::File => {
                    let (ra, rb) = (
                        self.cfg.viewer.rules_for(&a, &cst),
                        self.cfg.viewer.rules_for(&b, &cst),
                    );
                    if !rb.covers(&ra) {
                        return Some(format!(
                            "fewer redaction rules would apply to {}",
                            a.display()
                        ));
                    }
                    if (policy.unscannable_allowed(&b) && !policy.unscannable_allowed(&a))
                        || (policy.opaque(&b) && !policy.opaque(&a))
                    {
                        return Some(format!("{} would be served unscanned", a.display()));
                    }
                    if policy.metadata(&a) && !policy.metadata(&b) {
                        return Some(format!(
                            "{} would show its content instead of its metadata",
                            a.display()
                        ));
                    }
                    if policy.document(&b) && !policy.document(&a) {
                        return Some(format!(
                            "{} would be served as a rebuilt document instead of scanned whole",
                            a.display()
                        ));
                    }
                }
                Kind::Dir => {
                    if let Some(why) = self.subtree_loosens(&cfd, &a, &b, budget) {
                        return Some(why);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

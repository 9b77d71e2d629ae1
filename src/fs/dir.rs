//! Directory listings: only visible entries, with the stat each was listed with.

use super::*;

impl VeilFs {
    /// The listing a READDIR at `offset` continues: the open directory's (made on its first
    /// READDIR), or in no-open mode a fresh one at offset 0 and the unfinished one after it.
    pub(super) fn dir_entries(
        &self,
        fh: FileHandle,
        ino: INodeNo,
        offset: u64,
    ) -> Result<Arc<Listing>, Errno> {
        if fh.0 == 0 && self.cfg.no_open {
            if self.virtual_inode(ino.0).is_some() {
                return self.listing(ino.0).map(Arc::new);
            }
            let inode = self.inode(ino)?;
            if offset > 2
                && let Some(l) = inode
                    .partial_listing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            {
                return Ok(l);
            }
            return self.listing(ino.0).map(Arc::new);
        }
        let d = self.dir_handle(fh, ino)?;
        if let Some(e) = d.entries.get() {
            return Ok(e.clone());
        }
        let listed = Arc::new(self.listing(d.ino)?);
        if let Some(i) = self.inodes.get(d.ino) {
            i.note_listed();
        }
        Ok(d.entries.get_or_init(|| listed).clone())
    }

    /// No-open mode: keeps the listing a reply was taken from (`entries`, from offset `off`)
    /// for the kernel's next READDIR of it: the rest when the reply was `full`, and otherwise
    /// the empty reply that tells the kernel the listing ended. Without it that last request
    /// listed the directory again (a stat and a policy check per entry, for nothing): half of
    /// a cold `find`'s work. Dropped at the end, at the next listing from offset 0, and when
    /// the watcher sees the directory change.
    pub(super) fn keep_partial_listing(
        &self,
        fh: FileHandle,
        ino: INodeNo,
        full: bool,
        off: u64,
        entries: Arc<Listing>,
    ) {
        if fh.0 == 0
            && self.cfg.no_open
            && let Ok(inode) = self.inode(ino)
        {
            let ended = !full && (off - 2) as usize >= entries.len();
            *inode
                .partial_listing
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = (!ended).then_some(entries);
        }
    }

    /// What the agent lists in directory `ino`: its visible real entries, then the virtual
    /// ones placed there (a virtual directory holds only those).
    fn listing(&self, ino: u64) -> Result<Listing, Errno> {
        if self.virtual_inode(ino).is_some() {
            return Ok(self.virtual_listing(ino, &[]));
        }
        let mut l = self.list_visible(ino)?;
        if self.places_virtual() {
            let v = self.virtual_listing(ino, &l);
            l.extend(v);
        }
        Ok(l)
    }

    pub(super) fn list_visible(&self, ino: u64) -> Result<Vec<(OsString, Stat)>, Errno> {
        let inode = self.inodes.get(ino).ok_or(Errno::ESTALE)?;
        let rel = self.rel(ino)?;
        let dfd_owned = self.fd(&inode)?;
        let dfd = dfd_owned.as_fd();
        let entries = backing::list_dir(dfd).map_err(|e| errno_of(&e))?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let Ok(st) = backing::stat_at(dfd, &e.name) else {
                continue;
            };
            let st = if self.cfg.emulate_dev0 && st.kind() == Kind::File && st.size == 0 {
                match backing::lookup(dfd, &e.name) {
                    Ok(fd) => self.present(fd.as_fd(), st),
                    Err(_) => st,
                }
            } else {
                st
            };
            let crel = rel.join(&e.name);
            if self.cfg.viewer.name_holds_secret(&e.name) {
                continue;
            }
            let target = if st.kind() == Kind::Symlink && self.cfg.policy.needs_symlink_targets() {
                backing::readlink_at(dfd, &e.name).ok()
            } else {
                None
            };
            if self
                .cfg
                .policy
                .visibility(
                    &crel,
                    entry_kind(st.kind()),
                    st.size,
                    target.as_ref().map(Path::new),
                )
                .is_err()
            {
                continue;
            }
            let st = if st.kind() == Kind::Dir && st.nlink > 2 {
                match backing::lookup(dfd, &e.name) {
                    Ok(cfd) => self.shown_nlink(&crel, cfd.as_fd(), st),
                    Err(_) => st,
                }
            } else {
                st
            };
            let st = match &self.cfg.divert {
                // A diverted file lists with its copy's attributes, under the real identity.
                Some(d) if st.kind() == Kind::File && d.contains(&crel) => d
                    .open_copy(&crel)
                    .and_then(|fd| backing::stat_fd(fd.as_fd()))
                    .map(|c| Stat {
                        dev: st.dev,
                        ino: st.ino,
                        ..c
                    })
                    .unwrap_or(st),
                _ => st,
            };
            out.push((e.name, st));
        }
        if let Some(a) = &self.ahead {
            a.listed(dfd_owned.clone(), rel, &out);
        }
        Ok(out)
    }
}

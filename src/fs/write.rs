//! The mutating half of the filesystem. In read-only mode (no guard) every entry point answers
//! EROFS before touching anything, so no mode can forget a check.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;

use fuser::{Errno, FileHandle, INodeNo, Request};

use super::inode::Inode;
use super::{Handle, VeilFs};
use crate::backing::Stat;
use crate::guard::Guard;

pub enum NewNode {
    Dir { mode: u32 },
    Node { mode: u32, rdev: u32 },
    Symlink { target: OsString },
    Link { ino: u64 },
}

impl VeilFs {
    fn guard(&self) -> Result<&Arc<Guard>, Errno> {
        self.cfg.guard.as_ref().ok_or(Errno::EROFS)
    }

    pub(super) fn prepare_write_open(
        &self,
        _req: &Request,
        _inode: &Arc<Inode>,
        _flags: i32,
    ) -> Result<(), Errno> {
        let _g = self.guard()?;
        Err(Errno::EROFS)
    }

    pub(super) fn after_write_release(&self, _h: &Handle) {}

    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _fh: Option<FileHandle>,
    ) -> Result<Stat, Errno> {
        let _g = self.guard()?;
        Err(Errno::EROFS)
    }

    pub(super) fn do_create_node(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _node: NewNode,
    ) -> Result<(Arc<Inode>, Stat), Errno> {
        let _g = self.guard()?;
        Err(Errno::EROFS)
    }

    pub(super) fn do_remove(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _dir: bool,
    ) -> Result<(), Errno> {
        let _g = self.guard()?;
        Err(Errno::EROFS)
    }

    pub(super) fn do_rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: u32,
    ) -> Result<(), Errno> {
        let _g = self.guard()?;
        Err(Errno::EROFS)
    }

    pub(super) fn do_create_file(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _flags: i32,
    ) -> Result<(Arc<Inode>, Stat, u64), Errno> {
        let _g = self.guard()?;
        Err(Errno::EROFS)
    }

    pub(super) fn do_write(
        &self,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
    ) -> Result<u32, Errno> {
        let _g = self.guard()?;
        Err(Errno::EROFS)
    }

    pub(super) fn do_fallocate(
        &self,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
    ) -> Result<(), Errno> {
        let _g = self.guard()?;
        Err(Errno::EROFS)
    }

    pub(super) fn do_setxattr(
        &self,
        _ino: INodeNo,
        _name: &OsStr,
        _value: Option<&[u8]>,
        _flags: i32,
    ) -> Result<(), Errno> {
        let _g = self.guard()?;
        Err(Errno::EROFS)
    }
}

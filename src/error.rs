//! Rules every veilfs error follows, and the one accessor that recovers an error's cause.
//!
//! - Library functions return typed errors (`thiserror` enums), never strings; the CLI wraps them
//!   in `anyhow` with the context of the command.
//! - An error is never downgraded: an `io::Error` stays the `#[source]` of whatever wraps it, so
//!   ENOSPC in the store reaches the agent as ENOSPC, not EIO.
//! - Display reads as a sentence about the failing file or path and does not repeat its source.
//!
//! [`io_error`] walks the `source()` chain to the first `io::Error`, through every wrapper, so
//! the FUSE layer can answer the real errno.

use std::error::Error;
use std::io;

/// The first `io::Error` in `e`'s chain (`e` itself included).
pub fn io_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a io::Error> {
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(io) = x.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = x.source();
    }
    None
}

/// `e` and its sources as one line, `outer: inner: cause` (what anyhow's `{:#}` prints).
pub(crate) fn chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(x) = cur {
        out.push_str(": ");
        out.push_str(&x.to_string());
        cur = x.source();
    }
    out
}

/// The errno an agent should see for `e`: the first OS error code in its chain, else
/// `fallback`. An `io::Error` that only wraps another error (as `tempfile` does to add the path)
/// is looked into too: its `source()` skips the wrapped error itself.
pub(crate) fn errno(e: &(dyn Error + 'static), fallback: i32) -> i32 {
    os_code(e).unwrap_or(fallback)
}

fn os_code(e: &(dyn Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(io) = x.downcast_ref::<io::Error>() {
            if let Some(n) = io.raw_os_error() {
                return Some(n);
            }
            if let Some(n) = io.get_ref().and_then(|inner| os_code(inner)) {
                return Some(n);
            }
            // Wrappers that hide the code (tempfile's path errors) keep the kind.
            if let Some(n) = errno_of_kind(io.kind()) {
                return Some(n);
            }
        }
        cur = x.source();
    }
    None
}

fn errno_of_kind(k: io::ErrorKind) -> Option<i32> {
    use io::ErrorKind as K;
    Some(match k {
        K::StorageFull => libc::ENOSPC,
        K::QuotaExceeded => libc::EDQUOT,
        K::ReadOnlyFilesystem => libc::EROFS,
        K::FileTooLarge => libc::EFBIG,
        K::PermissionDenied => libc::EACCES,
        K::NotFound => libc::ENOENT,
        K::AlreadyExists => libc::EEXIST,
        K::InvalidFilename => libc::ENAMETOOLONG,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("{path}: write failed")]
        Io { path: String, source: io::Error },
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("snapshot of {path} failed")]
        Wrapped {
            path: String,
            #[source]
            source: Inner,
        },
        #[error(transparent)]
        Transparent(Inner),
    }

    #[test]
    fn errno_survives_every_wrapper() {
        let inner = || Inner::Io {
            path: "objects/ab".into(),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let e = Outer::Wrapped {
            path: "a.txt".into(),
            source: inner(),
        };
        assert_eq!(errno(&e, libc::EIO), libc::ENOSPC);
        assert_eq!(errno(&Outer::Transparent(inner()), libc::EIO), libc::ENOSPC);
        // tempfile's shape: an io::Error wrapping a path error whose source is the OS error.
        #[derive(Debug, thiserror::Error)]
        #[error("{path}: failed")]
        struct PathErr {
            path: String,
            source: io::Error,
        }
        let wrapped = io::Error::new(
            io::ErrorKind::StorageFull,
            PathErr {
                path: "obj".into(),
                source: io::Error::from_raw_os_error(libc::ENOSPC),
            },
        );
        // (tempfile's PathError::source() skips its own error: only the kind is left.)
        let e = Outer::Wrapped {
            path: "a.txt".into(),
            source: Inner::Io {
                path: "objects/ab".into(),
                source: wrapped,
            },
        };
        assert_eq!(errno(&e, libc::EIO), libc::ENOSPC);
        let plain = io::Error::other("no errno");
        assert_eq!(errno(&plain, libc::EIO), libc::EIO);
    }
}

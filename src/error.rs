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

/// The errno an agent should see for `e`: the cause's own when there is one, else `fallback`.
pub fn errno(e: &(dyn Error + 'static), fallback: i32) -> i32 {
    io_error(e)
        .and_then(io::Error::raw_os_error)
        .unwrap_or(fallback)
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
        let plain = io::Error::other("no errno");
        assert_eq!(errno(&plain, libc::EIO), libc::EIO);
    }
}

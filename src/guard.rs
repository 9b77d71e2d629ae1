//! Snapshot-before-write orchestration for the write path (snapshot mode).

/// The write path's state for one mount session.
pub struct Guard {}

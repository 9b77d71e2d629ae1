//! The count of unsupported ioctls the filesystem answered with ENOTTY: kept per process and
//! reported once at unmount, never logged per call (every `less` or Python `open()` sends
//! TCGETS).

/// Unsupported ioctls the mount answered (ENOTTY), by command: counted, never logged per call
/// (every `less` or Python `open()` sends TCGETS).
#[derive(Debug, Default, Clone)]
pub(crate) struct IoctlCount {
    pub total: u64,
    /// The first few distinct commands, with their counts.
    pub by_cmd: std::collections::BTreeMap<u32, u64>,
}

impl IoctlCount {
    pub(crate) fn describe(&self) -> String {
        let mut v: Vec<String> = self
            .by_cmd
            .iter()
            .map(|(c, n)| format!("{c:#x}x{n}"))
            .collect();
        if self.by_cmd.values().sum::<u64>() < self.total {
            v.push("...".into());
        }
        v.join(" ")
    }
}

static IOCTLS: std::sync::Mutex<IoctlCount> = std::sync::Mutex::new(IoctlCount {
    total: 0,
    by_cmd: std::collections::BTreeMap::new(),
});

/// Counts one unsupported ioctl (called by the filesystem's `ioctl` handler).
pub(crate) fn note_unsupported_ioctl(cmd: u32) {
    let mut c = IOCTLS.lock().unwrap_or_else(|e| e.into_inner());
    c.total += 1;
    if c.by_cmd.len() < 16 || c.by_cmd.contains_key(&cmd) {
        *c.by_cmd.entry(cmd).or_default() += 1;
    }
}

/// The unsupported ioctls counted so far in this process.
pub(crate) fn unsupported_ioctls() -> IoctlCount {
    IOCTLS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

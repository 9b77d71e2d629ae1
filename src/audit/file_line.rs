//! The OCSF line of the events every agent read emits (open, first read, synthesized view),
//! serialized straight from borrowed fields.
//!
//! Why not through [`Sink::ocsf`](super::Sink): that builds a `serde_json::Value`, a tree of
//! maps allocated and freed for every event, and a cold `grep -r` emits one event per file on
//! the request thread the agent waits on (it was a fifth of the mount's CPU there). These
//! structs write the same object: serde_json without `preserve_order` writes a `Value`'s keys in
//! sorted order, so every struct below declares its fields sorted too, and the bytes are
//! identical to the general path's (a unit test holds the two together, field for field).
//! A change (`changed`) takes this path too: an `rm -rf` or an untar emits one per file, on the
//! request the agent waits on. Everything else (denials, renames, control events) is rare and
//! keeps the general path.

use std::borrow::Cow;
use std::path::Path;

use serde::Serialize;

use super::{Actor, AuditEvent, OCSF_VERSION, ProcInfo};

#[derive(Serialize)]
struct Line<'a, D> {
    activity_id: u8,
    activity_name: &'static str,
    actor: ActorObj<'a>,
    category_name: &'static str,
    category_uid: u8,
    class_name: &'static str,
    class_uid: u32,
    device: Device<'a>,
    disposition: &'static str,
    disposition_id: u8,
    file: FileObj<'a>,
    message: Cow<'a, str>,
    metadata: Metadata<'a>,
    prev: &'a str,
    severity: &'static str,
    severity_id: u8,
    status: &'static str,
    status_id: u8,
    time: i64,
    type_name: Cow<'static, str>,
    type_uid: u32,
    unmapped: Unmapped<D>,
}

#[derive(Serialize)]
struct ActorObj<'a> {
    process: Process<'a>,
    user: User<'a>,
}

#[derive(Serialize)]
struct Process<'a> {
    file: ExeFile<'a>,
    name: &'a str,
    pid: u32,
    tid: u32,
    user: User<'a>,
}

#[derive(Serialize)]
struct ExeFile<'a> {
    name: &'a str,
    path: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    type_id: u8,
}

#[derive(Serialize)]
struct User<'a> {
    uid: &'a str,
}

#[derive(Serialize)]
struct Device<'a> {
    hostname: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    type_id: u8,
}

#[derive(Serialize)]
struct FileObj<'a> {
    name: Cow<'a, str>,
    parent_folder: Cow<'a, str>,
    path: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    type_id: u8,
}

#[derive(Serialize)]
struct Metadata<'a> {
    correlation_uid: &'a str,
    log_name: &'static str,
    product: Product,
    sequence: u64,
    version: &'static str,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Unmapped<D> {
    veilfs: D,
}

#[derive(Serialize)]
struct Details<'a> {
    event: &'static str,
    masked: bool,
    path: Cow<'a, str>,
    redactions: usize,
    rules: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    view: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    writable: Option<bool>,
}

/// veilfs's own fields of a change.
#[derive(Serialize)]
struct ChangeDetails<'a> {
    event: &'static str,
    op: &'a str,
    path: Cow<'a, str>,
}

/// What the session adds to every line.
pub(super) struct Session<'a> {
    pub id: &'a str,
    pub host: &'a str,
    pub mountpoint: &'a Path,
}

/// Chain fields and the clock of one line.
pub(super) struct Place<'a> {
    pub prev: &'a str,
    pub seq: u64,
    pub time: i64,
}

/// Whether [`write`] writes `e`. A read of a file moved outside the mount while open is
/// rare and says so in its fields: the general path writes it.
pub(super) fn covers(e: &AuditEvent) -> bool {
    matches!(
        e,
        AuditEvent::Open { .. }
            | AuditEvent::Read {
                moved_outside: false,
                ..
            }
            | AuditEvent::Synthesized { .. }
            | AuditEvent::Changed { .. }
    )
}

/// Writes the OCSF line of `e` into `out` (cleared first); false for an event this path does
/// not cover (the caller then takes the general one).
pub(super) fn write(
    out: &mut Vec<u8>,
    s: &Session<'_>,
    e: &AuditEvent,
    actor: &Actor,
    proc_: &ProcInfo,
    at: &Place<'_>,
) -> bool {
    if let AuditEvent::Changed { op, path } = e {
        // Allowed, informational; on a folder for mkdir and rmdir (as `Sink::ocsf` classes it).
        let activity_id = super::activity_of_op(op);
        let name = super::activity_name(activity_id);
        let dir = op.contains("mkdir") || op.contains("rmdir");
        let details = ChangeDetails {
            event: e.kind(),
            op,
            path: path.to_string_lossy(),
        };
        let head = Head {
            activity_id,
            activity_name: name,
            type_name: Cow::Owned(format!("File System Activity: {name}")),
            file_type: if dir { 2 } else { 1 },
        };
        return write_line(out, s, e, actor, proc_, at, path, head, details);
    }
    // Open: activity 14 "Open"; a first read or a synthesized view: 2 "Read". All allowed,
    // informational, on a regular file.
    let (activity_id, activity_name, type_name, path, masked, rules, redactions, view, writable) =
        match e {
            AuditEvent::Open {
                path,
                writable,
                masked,
                rules,
                redactions,
            } => (
                14,
                "Open",
                "File System Activity: Open",
                path,
                *masked,
                rules,
                *redactions,
                None,
                Some(*writable),
            ),
            AuditEvent::Read {
                path,
                masked,
                rules,
                redactions,
                ..
            } => (
                2,
                "Read",
                "File System Activity: Read",
                path,
                *masked,
                rules,
                *redactions,
                None,
                None,
            ),
            AuditEvent::Synthesized {
                path,
                view,
                rules,
                redactions,
            } => (
                2,
                "Read",
                "File System Activity: Read",
                path,
                true,
                rules,
                *redactions,
                Some(view.as_str()),
                None,
            ),
            _ => return false,
        };
    let details = Details {
        event: e.kind(),
        masked,
        path: path.to_string_lossy(),
        redactions,
        rules,
        view,
        writable,
    };
    let head = Head {
        activity_id,
        activity_name,
        type_name: Cow::Borrowed(type_name),
        file_type: 1,
    };
    write_line(out, s, e, actor, proc_, at, path, head, details)
}

/// The classification of a line.
struct Head {
    activity_id: u8,
    activity_name: &'static str,
    type_name: Cow<'static, str>,
    /// OCSF file type_id: 1 regular file, 2 folder.
    file_type: u8,
}

/// Writes the line of `e` on `path`, with veilfs's own fields `details`.
#[allow(clippy::too_many_arguments)]
fn write_line<D: Serialize>(
    out: &mut Vec<u8>,
    s: &Session<'_>,
    e: &AuditEvent,
    actor: &Actor,
    proc_: &ProcInfo,
    at: &Place<'_>,
    path: &Path,
    head: Head,
    details: D,
) -> bool {
    let Head {
        activity_id,
        activity_name,
        type_name,
        file_type,
    } = head;
    let abs;
    let abs: &Path = if path.as_os_str().is_empty() {
        s.mountpoint
    } else {
        abs = s.mountpoint.join(path);
        &abs
    };
    let uid = actor.uid.to_string();
    let line = Line {
        activity_id,
        activity_name,
        actor: ActorObj {
            process: Process {
                file: ExeFile {
                    name: &proc_.exe_name,
                    path: &proc_.exe,
                    kind: "Regular File",
                    type_id: 1,
                },
                name: &proc_.name,
                pid: proc_.pid,
                tid: actor.pid,
                user: User { uid: &uid },
            },
            user: User { uid: &uid },
        },
        category_name: "System Activity",
        category_uid: 1,
        class_name: "File System Activity",
        class_uid: 1001,
        device: Device {
            hostname: s.host,
            kind: "Unknown",
            type_id: 0,
        },
        disposition: "Allowed",
        disposition_id: 1,
        file: FileObj {
            name: abs
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            parent_folder: abs
                .parent()
                .map(|p| p.to_string_lossy())
                .unwrap_or_default(),
            path: abs.to_string_lossy(),
            kind: if file_type == 2 {
                "Folder"
            } else {
                "Regular File"
            },
            type_id: file_type,
        },
        message: Cow::Owned(e.message()),
        metadata: Metadata {
            correlation_uid: s.id,
            log_name: "audit",
            product: Product {
                name: "veilfs",
                vendor_name: "veilfs",
                version: env!("CARGO_PKG_VERSION"),
            },
            sequence: at.seq,
            version: OCSF_VERSION,
        },
        prev: at.prev,
        severity: "Informational",
        severity_id: 1,
        status: "Success",
        status_id: 1,
        time: at.time,
        type_name,
        type_uid: 1001 * 100 + activity_id as u32,
        unmapped: Unmapped { veilfs: details },
    };
    out.clear();
    // Serializing borrowed strings and integers into a Vec cannot fail.
    serde_json::to_writer(&mut *out, &line).is_ok()
}

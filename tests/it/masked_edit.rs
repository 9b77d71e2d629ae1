//! Editing a file the agent sees redacted, through real mounts: the agent's change reaches the
//! real folder, the secrets it never saw stay, and an edit of a masked range is refused — in
//! snapshot mode at the write, in overlay mode at `veilfs commit`. Issue #15 item 3: a short
//! secret (`Tq7zWx2`, masked as `<redact`, shorter than the `<redacted:` prefix) used to be
//! overwritten by its mask on an editor save.

use crate::common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{WriteEnv, tree_hash, veilfs};

const DB: &str = "host: db.internal\nuser: app\npassword: Tq7zWx2\ntoken: ghp_Zr8Kq2mVx7LpT4wNc9HbY3dFs6JgQ1eRu5Ak\nport: 5432\n";

fn profile(mode: &str) -> String {
    format!(
        r#"
version = 1
name = "test-masked-edit"
description = "writes everywhere, secrets masked"
[visibility]
deny = []
[redaction]
rule_sets = ["secrets"]
[write]
mode = "{mode}"
"#
    )
}

fn seed(s: &Path) {
    fs::create_dir_all(s.join("conf")).unwrap();
    fs::write(s.join("conf/db.yaml"), DB).unwrap();
    fs::write(s.join("conf/other.yaml"), DB).unwrap();
    fs::write(s.join("conf/third.yaml"), DB).unwrap();
    fs::write(s.join("conf/short.yaml"), SHORT).unwrap();
}

/// Only a short secret: nothing in the view starts with `<redacted:`.
const SHORT: &str = "password: Tq7zWx2\nport: 5432\n";

fn snapshot_env() -> WriteEnv {
    WriteEnv::new(&profile("snapshot"), seed)
}

fn overlay_env() -> WriteEnv {
    WriteEnv::new(&profile("overlay"), seed)
}

fn real(e: &WriteEnv, rel: &str) -> String {
    fs::read_to_string(e.scope.path().join(rel)).unwrap()
}

/// What the agent reads: the password and the token masked, every other byte as it is.
fn assert_masked_view(mp: &Path, rel: &str) -> String {
    let v = fs::read_to_string(mp.join(rel)).unwrap();
    assert!(v.contains("password: <redact\n"), "{v}");
    assert!(!v.contains("Tq7zWx2") && !v.contains("ghp_Zr8"), "{v}");
    assert_eq!(v.len(), DB.len());
    v
}

/// An editor's save: write a temp file next to it, rename it over the original.
fn editor_save(mp: &Path, rel: &str, content: &str) -> std::io::Result<()> {
    let tmp = mp.join(format!("{rel}.swp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, mp.join(rel))
}

/// `> file`: open with O_TRUNC, write, and close, reporting the error close(2) returns.
fn truncate_write(p: &Path, content: &str) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let mut f = fs::OpenOptions::new().write(true).truncate(true).open(p)?;
    f.write_all(content.as_bytes())?;
    let fd = f.into_raw_fd();
    // SAFETY: we own fd (taken from the File above) and close it once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn sed_i(mp: &Path, rel: &str, expr: &str) {
    let st = Command::new("sed")
        .arg("-i")
        .arg(expr)
        .arg(mp.join(rel))
        .status()
        .unwrap();
    assert!(st.success(), "sed -i {expr}");
}

/// The agent's three ways of changing another line of a masked file.
fn edit_other_lines(mp: &Path) {
    let v = assert_masked_view(mp, "conf/db.yaml");
    editor_save(mp, "conf/db.yaml", &v.replace("port: 5432", "port: 6543")).unwrap();
    let v = assert_masked_view(mp, "conf/other.yaml");
    truncate_write(
        &mp.join("conf/other.yaml"),
        &v.replace("user: app\n", "user: app\nsslmode: require\n"),
    )
    .unwrap();
    sed_i(mp, "conf/third.yaml", "s/db.internal/db2.internal/");
}

fn assert_other_lines_changed(e: &WriteEnv) {
    assert_eq!(
        real(e, "conf/db.yaml"),
        DB.replace("port: 5432", "port: 6543")
    );
    assert_eq!(
        real(e, "conf/other.yaml"),
        DB.replace("user: app\n", "user: app\nsslmode: require\n")
    );
    assert_eq!(
        real(e, "conf/third.yaml"),
        DB.replace("db.internal", "db2.internal")
    );
}

#[test]
fn snapshot_edits_of_a_masked_file_keep_its_secrets_and_roll_back() {
    let e = snapshot_env();
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    edit_other_lines(&m.mp);
    // The real folder holds the agent's changes and the real secrets, as soon as the save or
    // close(2) returned.
    assert_other_lines_changed(&e);
    // The agent sees its change, still masked.
    let v = assert_masked_view(&m.mp, "conf/db.yaml");
    assert!(v.contains("port: 6543"));
    // A second edit of the merged file merges again.
    sed_i(&m.mp, "conf/db.yaml", "s/user: app/user: app2/");
    assert_eq!(
        real(&e, "conf/db.yaml"),
        DB.replace("port: 5432", "port: 6543")
            .replace("user: app", "user: app2")
    );
    drop(m);
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(tree_hash(e.scope.path()), before, "rollback: {out}{err}");
    assert_eq!(real(&e, "conf/db.yaml"), DB);
}

#[test]
fn snapshot_edits_that_touch_the_masked_password_are_refused() {
    let e = snapshot_env();
    let m = e.mount();
    let v = assert_masked_view(&m.mp, "conf/db.yaml");
    let bad = v.replace("password: <redact", "password: hunter3");
    // Editor save: the rename over the masked file is refused.
    let r = editor_save(&m.mp, "conf/db.yaml", &bad);
    assert_eq!(
        r.unwrap_err().raw_os_error(),
        Some(libc::EACCES),
        "rename over"
    );
    assert_eq!(real(&e, "conf/db.yaml"), DB);
    // sed -i rewriting the mask text: refused the same way.
    let st = Command::new("sed")
        .arg("-i")
        .arg("s/<redact/changed/")
        .arg(m.path("conf/third.yaml"))
        .status()
        .unwrap();
    assert!(!st.success());
    assert_eq!(real(&e, "conf/third.yaml"), DB);
    // Truncate + write: close(2) fails, the real file keeps its password, and the agent's
    // content is kept aside in the store's overlay for a person.
    let r = truncate_write(&m.path("conf/other.yaml"), &bad);
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EACCES));
    assert_eq!(real(&e, "conf/other.yaml"), DB);
    drop(m);
    let kept = e.store.path().join("s/overlay/upper/conf/other.yaml");
    assert_eq!(fs::read_to_string(kept).unwrap(), bad);
    // And commit refuses it: the edit touches the masked range it was merged against.
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store(), "--force"]);
    assert!(!ok || out.contains("refused"), "{out}{err}");
    assert!(out.contains("refused conf/other.yaml"), "{out}{err}");
    assert_eq!(real(&e, "conf/other.yaml"), DB);
}

#[test]
fn overlay_edits_of_a_masked_file_commit_merged_and_roll_back() {
    let e = overlay_env();
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    edit_other_lines(&m.mp);
    // Nothing reaches the real folder before commit.
    assert_eq!(tree_hash(e.scope.path()), before);
    drop(m);
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_other_lines_changed(&e);
    let session = out
        .split("session ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap()
        .trim()
        .to_string();
    let (ok, out2, err2) = veilfs(&["rollback", "--store", &e.store(), "--session", &session]);
    assert!(ok, "{out}{out2}{err2}");
    assert_eq!(tree_hash(e.scope.path()), before, "{out}{out2}");
    assert_eq!(real(&e, "conf/db.yaml"), DB);
}

#[test]
fn overlay_edits_that_touch_the_masked_password_are_refused_at_commit() {
    let e = overlay_env();
    let m = e.mount();
    let v = assert_masked_view(&m.mp, "conf/db.yaml");
    editor_save(
        &m.mp,
        "conf/db.yaml",
        &v.replace("password: <redact", "password: <REDACT"),
    )
    .unwrap();
    // Another file edited cleanly in the same session commits.
    sed_i(&m.mp, "conf/third.yaml", "s/5432/6543/");
    drop(m);
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store(), "--force"]);
    assert!(out.contains("refused conf/db.yaml"), "{ok} {out}{err}");
    assert!(out.contains("masked bytes"), "{out}{err}");
    assert_eq!(real(&e, "conf/db.yaml"), DB);
    assert_eq!(real(&e, "conf/third.yaml"), DB.replace("5432", "6543"));
    // The refused edit stays in the overlay for a person.
    assert!(e.store.path().join("s/overlay/upper/conf/db.yaml").exists());
}

#[test]
fn overlay_commit_refuses_an_edit_of_a_file_changed_since_it_was_served() {
    let e = overlay_env();
    let m = e.mount();
    let v = fs::read_to_string(m.path("conf/short.yaml")).unwrap();
    assert_eq!(v, "password: <redact\nport: 5432\n");
    editor_save(&m.mp, "conf/short.yaml", &v.replace("5432", "6543")).unwrap();
    drop(m);
    // Someone rotates the password in the real folder meanwhile: the agent's view no longer
    // describes the real bytes, so its edit cannot be merged (even with --force, which only
    // overrides the ctime conflict).
    let rotated = SHORT.replace("Tq7zWx2", "Tq7zWx9");
    fs::write(e.scope.path().join("conf/short.yaml"), &rotated).unwrap();
    let (_, out, err) = veilfs(&["commit", "--store", &e.store(), "--force"]);
    assert!(out.contains("refused conf/short.yaml"), "{out}{err}");
    assert_eq!(real(&e, "conf/short.yaml"), rotated);
}

/// Issue #15 item 3, as reported: a secret shorter than the `<redacted:` prefix, an editor save
/// of another line in overlay mode, and a commit that wrote the mask over the password.
#[test]
fn regression_issue_15_short_mask_editor_save_commits_the_real_password() {
    let e = overlay_env();
    let m = e.mount();
    let v = fs::read_to_string(m.path("conf/short.yaml")).unwrap();
    editor_save(&m.mp, "conf/short.yaml", &v.replace("5432", "6543")).unwrap();
    drop(m);
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        real(&e, "conf/short.yaml"),
        "password: Tq7zWx2\nport: 6543\n"
    );
}

/// Truncating a masked file by path (truncate(2)) goes through the same rule as an edit:
/// cutting the password off (after which the file would be clean, and a write of mask text would
/// go straight through) is refused; truncating after the last mask is not. (`truncate(1)` opens
/// the file and uses ftruncate: that is a masked edit, refused at close.)
#[test]
fn truncating_through_a_mask_is_refused() {
    let e = snapshot_env();
    let m = e.mount();
    let path = |rel: &str| {
        std::ffi::CString::new(m.path(rel).into_os_string().into_encoded_bytes()).unwrap()
    };
    let p = path("conf/short.yaml");
    for len in [0, 12, 16] {
        // SAFETY: a valid NUL-terminated path.
        let r = unsafe { libc::truncate(p.as_ptr(), len) };
        let err = std::io::Error::last_os_error();
        assert_eq!(r, -1, "truncate to {len}");
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        assert_eq!(real(&e, "conf/short.yaml"), SHORT);
    }
    // "password: Tq7zWx2\n" is 18 bytes: cutting the port line keeps the secret whole.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::truncate(p.as_ptr(), 18) }, 0);
    assert_eq!(real(&e, "conf/short.yaml"), "password: Tq7zWx2\n");
}

/// Overlay mode: a masked file renamed, then edited at its new name. The new name has no real
/// file to merge with; committing the agent's content would put the masks in the real folder
/// (and the rename would remove the real password), so the file is refused.
#[test]
fn overlay_a_renamed_then_edited_masked_file_is_refused_at_commit() {
    let e = overlay_env();
    let m = e.mount();
    fs::rename(m.path("conf/short.yaml"), m.path("conf/moved.yaml")).unwrap();
    sed_i(&m.mp, "conf/moved.yaml", "s/5432/6543/");
    let v = fs::read_to_string(m.path("conf/moved.yaml")).unwrap();
    assert_eq!(v, "password: <redact\nport: 6543\n");
    drop(m);
    let (_, out, err) = veilfs(&["commit", "--store", &e.store(), "--force"]);
    assert!(out.contains("refused conf/moved.yaml"), "{out}{err}");
    assert!(!e.scope.path().join("conf/moved.yaml").exists());
}

/// An in-place write (no truncate) into a masked file, made durable with fsync: the real file
/// holds the change once fsync returns, and the handle reads back the view, never the secret.
#[test]
fn snapshot_in_place_write_is_merged_at_fsync_and_a_write_into_the_mask_fails_it() {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let e = snapshot_env();
    let m = e.mount();
    let v = assert_masked_view(&m.mp, "conf/db.yaml");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("conf/db.yaml"))
        .unwrap();
    let at = v.find("5432").unwrap() as u64;
    f.write_all_at(b"6543", at).unwrap();
    f.sync_all().unwrap();
    assert_eq!(real(&e, "conf/db.yaml"), DB.replace("5432", "6543"));
    let mut back = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut back).unwrap();
    assert_eq!(back, v.replace("5432", "6543"));
    // Overwriting two bytes of the masked password through the same handle: fsync fails and
    // the real password stays.
    let pw = v.find("<redact").unwrap() as u64;
    f.write_all_at(b"xx", pw).unwrap();
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EACCES));
    assert_eq!(real(&e, "conf/db.yaml"), DB.replace("5432", "6543"));
}

/// Snapshot mode, a masked file above `snapshot_max_size`: no pre-image can be stored, so the
/// agent's edit is diverted (as any write of such a file is), and `veilfs commit` merges it.
#[test]
fn snapshot_masked_edit_without_a_snapshot_is_diverted_then_committed_merged() {
    let e = WriteEnv::new(
        &format!("{}snapshot_max_size = 16\n", profile("snapshot")),
        seed,
    );
    let m = e.mount();
    let v = assert_masked_view(&m.mp, "conf/db.yaml");
    truncate_write(&m.path("conf/db.yaml"), &v.replace("5432", "6543")).unwrap();
    assert_eq!(real(&e, "conf/db.yaml"), DB);
    // The agent sees its change.
    assert_eq!(
        fs::read_to_string(m.path("conf/db.yaml")).unwrap(),
        v.replace("5432", "6543")
    );
    drop(m);
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(real(&e, "conf/db.yaml"), DB.replace("5432", "6543"));
}

//! Overlay mode through a real mount: the agent's writes land in the store's upper layer, the
//! real folder stays byte-for-byte untouched until `veilfs commit`, a commit can be rolled back,
//! `discard` throws the changes away, conflicts are skipped, masks are never committed, and a
//! SIGKILL of the mount process loses nothing.

use crate::common;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::{Mount, WriteEnv, tree_hash, veilfs};

const OVERLAY: &str = r#"
version = 1
name = "test-overlay"
description = "overlay writes everywhere"
[visibility]
deny = []
hide_special_files = false
hide_escaping_symlinks = false
[redaction]
rule_sets = []
[write]
mode = "overlay"
"#;

fn seed(s: &Path) {
    fs::create_dir_all(s.join("src/nested/deep")).unwrap();
    fs::create_dir_all(s.join("docs")).unwrap();
    fs::create_dir_all(s.join("build/obj")).unwrap();
    fs::write(s.join("src/main.rs"), "fn main() {}\n").unwrap();
    fs::write(s.join("src/nested/lib.rs"), "pub fn f() {}\n").unwrap();
    fs::write(s.join("src/nested/deep/x.rs"), "// x\n").unwrap();
    fs::write(s.join("docs/a.md"), "# A\n".repeat(100)).unwrap();
    fs::write(s.join("docs/b.md"), "# B\n").unwrap();
    fs::write(s.join("build/obj/o.o"), [0u8, 1, 2, 3]).unwrap();
    fs::write(s.join("build/log"), "log\n").unwrap();
    fs::write(s.join("shared"), "shared\n").unwrap();
    fs::create_dir_all(s.join("kind/dir2file/sub")).unwrap();
    fs::write(s.join("kind/dir2file/sub/f"), "f\n").unwrap();
    fs::write(s.join("kind/file2dir"), "was a file\n").unwrap();
    symlink("../docs", s.join("kind/link2file")).unwrap();
    fs::hard_link(s.join("shared"), s.join("shared-link")).unwrap();
    fs::set_permissions(s.join("docs/b.md"), fs::Permissions::from_mode(0o640)).unwrap();
}

fn env() -> WriteEnv {
    WriteEnv::new(OVERLAY, seed)
}

trait OverlayEnv {
    fn upper(&self) -> PathBuf;
    fn real(&self, rel: &str) -> PathBuf;
}

impl OverlayEnv for WriteEnv {
    fn upper(&self) -> PathBuf {
        self.store.path().join("s/overlay/upper")
    }
    fn real(&self, rel: &str) -> PathBuf {
        self.scope.path().join(rel)
    }
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings; buf valid for its length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

/// Every path, kind, mode, owner, size, content, link target and user xattr; no times (the
/// tree hash covers those).
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut es: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        es.sort();
        for p in es {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_file() {
                blake3::hash(&fs::read(&p).unwrap()).to_hex()[..12].to_string()
            } else {
                String::new()
            };
            let x = get_xattr(&p, "user.tag")
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            out.push(format!(
                "{rel} {:o} {}:{} {} nlink={} {what} {x}",
                m.mode(),
                m.uid(),
                m.gid(),
                if m.is_dir() { 0 } else { m.size() },
                if m.is_dir() { 0 } else { m.nlink() },
            ));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// What an agent does: edit, append, create, delete, rename files and directories (also a
/// directory over a new name and back), delete a tree and re-create it, hard links, symlinks,
/// xattrs, chmod, truncate, replace a file by rename.
fn agent_session(mp: &Path) {
    fs::write(
        mp.join("src/main.rs"),
        "fn main() { println!(\"changed\"); }\n",
    )
    .unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(mp.join("docs/a.md"))
        .unwrap()
        .write_all(b"appended\n")
        .unwrap();
    fs::write(mp.join("new.txt"), "created\n").unwrap();
    fs::create_dir(mp.join("newdir")).unwrap();
    fs::write(mp.join("newdir/inner.txt"), "inner\n").unwrap();
    fs::remove_file(mp.join("docs/b.md")).unwrap();
    // A lower directory renamed (redirect), then changed inside.
    fs::rename(mp.join("src/nested"), mp.join("src/moved")).unwrap();
    fs::write(mp.join("src/moved/lib.rs"), "pub fn g() {}\n").unwrap();
    fs::write(mp.join("src/moved/deep/y.rs"), "// y\n").unwrap();
    // A tree deleted and re-created (opaque directory).
    fs::remove_dir_all(mp.join("build")).unwrap();
    fs::create_dir_all(mp.join("build/obj")).unwrap();
    fs::write(mp.join("build/obj/p.o"), [9u8; 10]).unwrap();
    fs::set_permissions(mp.join("src/main.rs"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("main.rs", mp.join("src/link")).unwrap();
    fs::hard_link(mp.join("new.txt"), mp.join("newdir/new-link.txt")).unwrap();
    fs::hard_link(mp.join("docs/a.md"), mp.join("docs/a-link.md")).unwrap();
    // A lower hard link edited through one name: every name shows it (overlayfs index=on).
    fs::write(mp.join("shared"), "shared, edited\n").unwrap();
    assert_eq!(
        fs::read_to_string(mp.join("shared-link")).unwrap(),
        "shared, edited\n"
    );
    set_xattr(&mp.join("docs/a.md"), "user.tag", b"lower-file");
    set_xattr(&mp.join("newdir/inner.txt"), "user.tag", b"new-file");
    set_xattr(&mp.join("newdir"), "user.tag", b"new-dir");
    fs::write(mp.join("tmp-save"), "saved atomically\n").unwrap();
    fs::rename(mp.join("tmp-save"), mp.join("docs/a-link.md")).unwrap();
    // Kinds change: a tree becomes a file, a file a directory, a symlink a file.
    fs::remove_dir_all(mp.join("kind/dir2file")).unwrap();
    fs::write(mp.join("kind/dir2file"), "now a file\n").unwrap();
    fs::remove_file(mp.join("kind/file2dir")).unwrap();
    fs::create_dir(mp.join("kind/file2dir")).unwrap();
    fs::write(mp.join("kind/file2dir/inside"), "inside\n").unwrap();
    fs::remove_file(mp.join("kind/link2file")).unwrap();
    fs::write(mp.join("kind/link2file"), "no longer a link\n").unwrap();
    fs::File::options()
        .write(true)
        .open(mp.join("docs/a.md"))
        .unwrap()
        .set_len(10)
        .unwrap();
}

#[test]
fn commit_applies_exactly_what_the_mount_showed_and_rollback_undoes_it() {
    let e = env();
    let before = tree_hash(e.scope.path());
    let before_list = listing(e.scope.path());
    let m = e.mount();
    agent_session(&m.mp);
    let view_hash = tree_hash(&m.mp);
    let view_list = listing(&m.mp);
    // The real folder has not changed while the agent worked.
    assert_eq!(
        tree_hash(e.scope.path()),
        before,
        "real folder changed during the session"
    );
    // Commit refuses while the mount runs.
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store()]);
    assert!(!ok && err.contains("still mounted"), "{out}{err}");
    let (st, _) = m.stop();
    assert!(st.success());
    assert_eq!(tree_hash(e.scope.path()), before);
    assert_eq!(listing(e.scope.path()), before_list);

    let (ok, out, err) = veilfs(&["diff", "--store", &e.store()]);
    assert!(ok, "{err}");
    for needle in [
        "+fn main() { println!(\"changed\"); }",
        "deleted docs/b.md",
        "created newdir/inner.txt",
        "deleted build/obj/o.o",
        "created build/obj/p.o",
        "created src/moved/deep/y.rs",
        "deleted src/nested/lib.rs",
        "created src/link (symlink -> main.rs)",
        "linked newdir/new-link.txt",
    ] {
        assert!(out.contains(needle), "diff lacks {needle:?}:\n{out}");
    }

    let (ok, out, err) = veilfs(&["commit", "--store", &e.store(), "--dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("put      src/main.rs"), "{out}");
    assert_eq!(
        tree_hash(e.scope.path()),
        before,
        "dry run changed the real folder"
    );

    let (ok, out, err) = veilfs(&["commit", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(listing(e.scope.path()), view_list, "commit: {out}{err}");
    assert_eq!(
        tree_hash(e.scope.path()),
        view_hash,
        "times differ after commit"
    );
    assert_eq!(
        fs::metadata(e.real("new.txt")).unwrap().ino(),
        fs::metadata(e.real("newdir/new-link.txt")).unwrap().ino(),
        "hard link committed as a copy"
    );
    assert_eq!(
        fs::metadata(e.real("shared")).unwrap().ino(),
        fs::metadata(e.real("shared-link")).unwrap().ino(),
        "a real hard link was split"
    );
    assert_eq!(
        fs::read_to_string(e.real("shared-link")).unwrap(),
        "shared, edited\n"
    );
    assert_eq!(
        fs::read_dir(e.upper()).unwrap().count(),
        0,
        "committed entries left in the upper layer"
    );
    assert_eq!(index_files(&e), 0, "stale index entries after commit");
    // A new mount shows the committed tree. Link counts aside: a file whose names are in
    // different directories and were linked before this mount shows only the names veilfs
    // can see without walking the tree (README, "The agent chooses every name").
    let m = e.mount();
    let no_nlink = |l: Vec<String>| -> Vec<String> {
        l.into_iter()
            .map(|x| {
                let mut f: Vec<&str> = x.split(' ').collect();
                if let Some(n) = f.iter_mut().find(|w| w.starts_with("nlink=")) {
                    *n = "nlink=?";
                }
                f.join(" ")
            })
            .collect()
    };
    assert_eq!(no_nlink(listing(&m.mp)), no_nlink(view_list.clone()));
    drop(m);

    let session = out
        .split("session ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap()
        .trim()
        .to_string();
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store(), "--session", &session]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        tree_hash(e.scope.path()),
        before,
        "rollback of the commit: {out}{err}"
    );
    assert_eq!(listing(e.scope.path()), before_list);
    let (ok, out, err) = veilfs(&["verify", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
}

#[test]
fn discard_empties_the_upper_layer_and_a_new_mount_shows_the_original() {
    let e = env();
    let before = listing(e.scope.path());
    let m = e.mount();
    agent_session(&m.mp);
    let (ok, _, err) = veilfs(&["discard", "--store", &e.store()]);
    assert!(!ok && err.contains("still mounted"), "{err}");
    drop(m);
    // Discard one path first: only it goes back.
    let (ok, out, err) = veilfs(&["discard", "--store", &e.store(), "src/main.rs"]);
    assert!(ok, "{out}{err}");
    let m = e.mount();
    assert_eq!(
        fs::read_to_string(m.path("src/main.rs")).unwrap(),
        "fn main() {}\n"
    );
    assert!(m.path("new.txt").exists());
    drop(m);
    let (ok, out, err) = veilfs(&["discard", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(fs::read_dir(e.upper()).unwrap().count(), 0);
    let m = e.mount();
    assert_eq!(listing(&m.mp), before);
    drop(m);
    assert_eq!(listing(e.scope.path()), before);
}

#[test]
fn a_real_file_changed_after_the_agents_copy_is_a_conflict_skipped_without_force() {
    let e = env();
    let m = e.mount();
    fs::write(m.path("src/main.rs"), "agent\n").unwrap();
    fs::write(m.path("docs/b.md"), "agent b\n").unwrap();
    fs::remove_file(m.path("build/log")).unwrap();
    drop(m);
    // Someone edits the real files after the agent's copy / deletion.
    fs::write(e.real("src/main.rs"), "outsider\n").unwrap();
    fs::write(e.real("build/log"), "outsider log\n").unwrap();

    let (ok, out, err) = veilfs(&["commit", "--store", &e.store()]);
    assert!(!ok, "a skipped conflict must not exit 0: {out}{err}");
    assert!(out.contains("conflict src/main.rs"), "{out}");
    assert!(out.contains("conflict build/log"), "{out}");
    assert!(!out.contains("conflict docs/b.md"), "{out}");
    assert_eq!(
        fs::read_to_string(e.real("src/main.rs")).unwrap(),
        "outsider\n"
    );
    assert_eq!(
        fs::read_to_string(e.real("build/log")).unwrap(),
        "outsider log\n"
    );
    assert_eq!(
        fs::read_to_string(e.real("docs/b.md")).unwrap(),
        "agent b\n"
    );
    // The skipped changes stay in the overlay.
    assert!(e.upper().join("src/main.rs").exists());
    assert!(!e.upper().join("docs/b.md").exists());

    let (ok, out, err) = veilfs(&["commit", "--store", &e.store(), "--force"]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        fs::read_to_string(e.real("src/main.rs")).unwrap(),
        "agent\n"
    );
    assert!(!e.real("build/log").exists());
}

#[test]
fn a_redaction_mask_is_never_committed_over_real_bytes() {
    let e = env();
    fs::write(
        e.real("config.yaml"),
        "user: me\nkey: AKIAABCDEFGHIJKLMNOP\n",
    )
    .unwrap();
    fs::write(e.real("notes.md"), "we print <redacted:aws> in docs\n").unwrap();
    let m = e.mount();
    fs::write(
        m.path("notes.md"),
        "we print <redacted:aws> in docs\nmore\n",
    )
    .unwrap();
    fs::write(m.path("src/main.rs"), "fine\n").unwrap();
    drop(m);
    // Masked bytes cannot reach the upper layer through the mount (write-opens of masked files
    // are refused); plant them as if they had.
    fs::write(
        e.upper().join("config.yaml"),
        "user: me\nkey: <redacted:aws>*****\nmore\n",
    )
    .unwrap();
    // A mask straddling the scanner's 1 MiB chunk boundary in a large file.
    let mut big = vec![b'a'; 2 << 20];
    big[(1 << 20) - 5..(1 << 20) + 15].copy_from_slice(b"SECRETSECRETSECRET!!");
    fs::write(e.real("big.txt"), &big).unwrap();
    big[(1 << 20) - 5..(1 << 20) + 15].copy_from_slice(b"<redacted:aws>******");
    fs::write(e.upper().join("big.txt"), &big).unwrap();
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store(), "--force"]);
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains("refused config.yaml") && out.contains("<redacted:aws>"),
        "{out}"
    );
    assert!(
        out.contains("refused big.txt: bytes 1048571..1048591"),
        "{out}"
    );
    assert_eq!(fs::read(e.real("big.txt")).unwrap()[(1 << 20) - 5], b'S');
    assert_eq!(
        fs::read_to_string(e.real("config.yaml")).unwrap(),
        "user: me\nkey: AKIAABCDEFGHIJKLMNOP\n"
    );
    // The marker where the real file has the same bytes is not a mask.
    assert_eq!(
        fs::read_to_string(e.real("notes.md")).unwrap(),
        "we print <redacted:aws> in docs\nmore\n"
    );
    assert_eq!(fs::read_to_string(e.real("src/main.rs")).unwrap(), "fine\n");
    assert!(e.upper().join("config.yaml").exists());
}

#[test]
fn commit_of_some_paths_leaves_the_rest_in_the_overlay() {
    let e = env();
    let m = e.mount();
    fs::write(m.path("src/main.rs"), "agent\n").unwrap();
    fs::write(m.path("docs/b.md"), "agent b\n").unwrap();
    fs::create_dir(m.path("docs/sub")).unwrap();
    fs::write(m.path("docs/sub/c.md"), "c\n").unwrap();
    let view = listing(&m.mp);
    drop(m);
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store(), "docs"]);
    assert!(ok, "{out}{err}");
    assert_eq!(fs::read_to_string(e.real("docs/sub/c.md")).unwrap(), "c\n");
    assert_eq!(
        fs::read_to_string(e.real("src/main.rs")).unwrap(),
        "fn main() {}\n"
    );
    let m = e.mount();
    assert_eq!(listing(&m.mp), view);
    drop(m);
}

#[test]
fn sigkill_of_the_mount_loses_none_of_the_agents_changes() {
    let e = env();
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    let script = format!(
        r#"set -u
cd "{mp}"
i=0
while :; do
  i=$((i+1))
  echo "line $i" >> docs/a.md
  echo "file $i" > "f$i.txt"
  [ $((i % 3)) -eq 0 ] && mv "f$i.txt" "src/g$i.txt"
  [ $((i % 5)) -eq 0 ] && mkdir -p "d$i" && echo x > "d$i/x"
  echo "progress $i"
done"#,
        mp = m.mp.display()
    );
    let done = crate::common::sigkill_mount_during(m, &script, 40);
    assert_eq!(tree_hash(e.scope.path()), before);
    // The kernel overlay was held only by the killed process's fds: nothing stays mounted
    // (it used to stay at STORE/overlay/merged until the next mount).
    let store = e.store();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.lines().any(|l| l.contains(store.as_str())),
        "a mount under the store outlived the mount process:\n{mounts}"
    );

    // Remount the same store: everything the agent saw completed is there.
    let m = e.mount();
    let a = fs::read_to_string(m.path("docs/a.md")).unwrap();
    for i in 1..=done {
        assert!(a.contains(&format!("line {i}\n")), "line {i} lost");
        let f = if i % 3 == 0 {
            m.path(&format!("src/g{i}.txt"))
        } else {
            m.path(&format!("f{i}.txt"))
        };
        assert_eq!(
            fs::read_to_string(&f).unwrap(),
            format!("file {i}\n"),
            "{}",
            f.display()
        );
        if i % 5 == 0 {
            assert_eq!(
                fs::read_to_string(m.path(&format!("d{i}/x"))).unwrap(),
                "x\n"
            );
        }
    }
    let view = listing(&m.mp);
    let (st, _) = m.stop();
    assert!(st.success());
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(listing(e.scope.path()), view);
}

/// The overlay is mounted `volatile` (no fsync per copy-up): `overlay/mounted` says a mount
/// may hold unsynced writes, and is gone once its end synced them. One found from another boot
/// (the machine restarted under the mount) is reported by the next mount, `diff` and `commit`;
/// the mount still works, with what the upper layer holds.
#[test]
fn a_mount_after_the_machine_restarted_under_the_last_one_warns_of_torn_files() {
    let e = env();
    let mounted = e.store.path().join("s/overlay/mounted");
    let m = e.mount();
    fs::write(m.path("docs/a.md"), "edited\n").unwrap();
    assert!(mounted.exists(), "written at mount");
    if rustix::process::geteuid().is_root() {
        // overlayfs's own sign of `volatile` (its scratch dir is mode 0 for anyone else).
        assert!(
            e.store
                .path()
                .join("s/overlay/work/work/incompat/volatile")
                .exists()
        );
    }
    let fd = fs::File::open(m.path("docs/a.md")).unwrap();
    fd.sync_all().unwrap();
    drop(fd);
    let (st, err) = m.stop();
    assert!(st.success(), "{err}");
    assert!(
        !mounted.exists(),
        "removed once the end synced the upper layer"
    );

    fs::write(&mounted, "a boot id of another boot\n").unwrap();
    let (ok, out, err) = veilfs(&["diff", "--store", &e.store()]);
    assert!(ok && err.contains("the machine restarted"), "{out}{err}");
    let m = e.mount();
    assert_eq!(fs::read_to_string(m.path("docs/a.md")).unwrap(), "edited\n");
    let (st, err) = m.stop();
    assert!(
        st.success() && err.contains("the machine restarted"),
        "{err}"
    );
    // Said until the changes a restart may have torn are gone.
    let (ok, out, err) = veilfs(&["diff", "--store", &e.store()]);
    assert!(ok && err.contains("the machine restarted"), "{out}{err}");
    let (ok, out, err) = veilfs(&["discard", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    // (Nothing is left to show: `diff` says so.)
    let (_, out, err) = veilfs(&["diff", "--store", &e.store()]);
    assert!(!err.contains("restarted"), "{out}{err}");
    let m = e.mount();
    assert_eq!(
        fs::read_to_string(m.path("docs/a.md")).unwrap(),
        "# A\n".repeat(100)
    );
    let (st, err) = m.stop();
    assert!(st.success() && !err.contains("restarted"), "{err}");
    assert!(!e.store.path().join("s/overlay/restarted").exists());
    // A restart with nothing pending tore nothing: no warning.
    fs::write(&mounted, "a boot id of another boot\n").unwrap();
    let (st, err) = e.mount().stop();
    assert!(st.success() && !err.contains("restarted"), "{err}");
}

fn index_files(e: &WriteEnv) -> usize {
    fs::read_dir(e.store.path().join("s/overlay/work/index"))
        .map(|rd| {
            rd.flatten()
                .filter(|x| x.file_type().is_ok_and(|t| t.is_file()))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn an_edit_of_a_hard_link_reachable_only_through_its_other_name_is_committed() {
    let e = env();
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    fs::write(m.path("shared"), "edited\n").unwrap();
    fs::remove_file(m.path("shared")).unwrap();
    assert_eq!(
        fs::read_to_string(m.path("shared-link")).unwrap(),
        "edited\n"
    );
    drop(m);
    assert_eq!(tree_hash(e.scope.path()), before);
    let (ok, out, err) = veilfs(&["diff", "--store", &e.store()]);
    assert!(
        ok && out.contains("+edited") && out.contains("deleted shared"),
        "{out}{err}"
    );
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert!(!e.real("shared").exists());
    assert_eq!(
        fs::read_to_string(e.real("shared-link")).unwrap(),
        "edited\n"
    );
    assert_eq!(index_files(&e), 0, "stale index entries after commit");
    let m = e.mount();
    assert_eq!(
        fs::read_to_string(m.path("shared-link")).unwrap(),
        "edited\n"
    );
    drop(m);
    let session = out
        .split("session ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let (ok, out, err) = veilfs(&[
        "rollback",
        "--store",
        &e.store(),
        "--session",
        session.trim(),
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(tree_hash(e.scope.path()), before, "{out}{err}");
}

#[test]
fn discarding_an_edited_hard_link_restores_every_name() {
    let e = env();
    let m = e.mount();
    fs::write(m.path("shared"), "edited\n").unwrap();
    fs::write(m.path("docs/b.md"), "kept\n").unwrap();
    drop(m);
    let (ok, out, err) = veilfs(&["discard", "--store", &e.store(), "shared"]);
    assert!(ok, "{out}{err}");
    assert_eq!(index_files(&e), 0);
    let m = e.mount();
    assert_eq!(fs::read_to_string(m.path("shared")).unwrap(), "shared\n");
    assert_eq!(
        fs::read_to_string(m.path("shared-link")).unwrap(),
        "shared\n"
    );
    assert_eq!(fs::read_to_string(m.path("docs/b.md")).unwrap(), "kept\n");
    drop(m);
}

#[test]
fn a_store_mounts_again_after_its_scope_was_replaced_once_nothing_is_pending() {
    let e = env();
    let m = e.mount();
    fs::write(m.path("docs/b.md"), "agent\n").unwrap();
    drop(m);
    // Another scope cannot take over pending changes.
    let other = tempfile::tempdir().unwrap();
    let err = Mount::try_start(
        other.path(),
        &[
            "--profile",
            e.profile.to_str().unwrap(),
            "--store",
            &e.store(),
        ],
    )
    .err()
    .expect("mounted another scope over pending changes");
    assert!(err.contains("commit or discard"), "{err}");
    let (ok, out, err) = veilfs(&["discard", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    // The scope is replaced by a new directory at the same path.
    fs::remove_dir_all(e.scope.path()).unwrap();
    fs::create_dir(e.scope.path()).unwrap();
    fs::write(e.real("fresh.txt"), "fresh\n").unwrap();
    let m = e.mount();
    assert_eq!(fs::read_to_string(m.path("fresh.txt")).unwrap(), "fresh\n");
    assert!(!m.path("docs").exists());
}

#[test]
fn nested_and_repeated_directory_renames_commit_as_shown() {
    let e = env();
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    // A subdirectory moved out, then its parent renamed twice, then a new directory at the
    // old name; a directory renamed within its parent (relative redirect) and edited.
    fs::rename(m.path("src/nested/deep"), m.path("deep-out")).unwrap();
    fs::rename(m.path("src/nested"), m.path("docs/n1")).unwrap();
    fs::rename(m.path("docs/n1"), m.path("n2")).unwrap();
    fs::create_dir(m.path("src/nested")).unwrap();
    fs::write(m.path("src/nested/fresh.rs"), "// fresh\n").unwrap();
    fs::rename(m.path("build"), m.path("build2")).unwrap();
    fs::write(m.path("build2/obj/extra.o"), [1u8; 3]).unwrap();
    fs::remove_file(m.path("build2/log")).unwrap();
    let view_hash = tree_hash(&m.mp);
    let view = listing(&m.mp);
    drop(m);
    assert_eq!(tree_hash(e.scope.path()), before);
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(listing(e.scope.path()), view);
    assert_eq!(tree_hash(e.scope.path()), view_hash);
    let m = e.mount();
    assert_eq!(listing(&m.mp), view);
    drop(m);
    let (ok, out, err) = veilfs(&["rollback", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(tree_hash(e.scope.path()), before, "{out}{err}");
}

#[test]
fn commit_and_discard_of_an_unchanged_overlay_do_nothing() {
    let e = env();
    let before = tree_hash(e.scope.path());
    let m = e.mount();
    let _ = fs::read_to_string(m.path("docs/a.md")).unwrap();
    drop(m);
    let (ok, out, err) = veilfs(&["commit", "--store", &e.store()]);
    assert!(ok && out.contains("nothing to commit"), "{out}{err}");
    let (ok, out, err) = veilfs(&["discard", "--store", &e.store()]);
    assert!(ok, "{out}{err}");
    assert_eq!(tree_hash(e.scope.path()), before);
    // A store without an overlay is refused with a clear message.
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, err) = veilfs(&["commit", "--store", empty.path().to_str().unwrap()]);
    assert!(!ok, "{err}");
}

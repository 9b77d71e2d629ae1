//! `veilfs profile check` and `veilfs scan`, run as the real binary in a temp dir; plus one
//! library-level check that needs its own test binary (a counting global allocator): policy
//! queries do not allocate on the hot path.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn veilfs(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veilfs"))
        .args(args)
        .output()
        .expect("run veilfs")
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn profiles() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
}

#[test]
fn check_prints_the_effective_profile_of_every_shipped_profile() {
    for name in ["default.toml", "developer.toml", "strict.toml"] {
        let p = profiles().join(name);
        let out = veilfs(&["profile".as_ref(), "check".as_ref(), p.as_os_str()]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", s(&out.stderr));
        let stdout = s(&out.stdout);
        assert!(stdout.contains("version = 1"), "{stdout}");
        assert!(stdout.contains("[write]"), "{stdout}");
        assert!(stdout.contains("ttl_ms = 1000"), "{stdout}");
        assert!(out.stderr.is_empty(), "{name}: {}", s(&out.stderr));
    }
}

#[test]
fn check_reports_located_errors_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "version = 1\n\n[visibility]\n  hdie = true\n").unwrap();
    let out = veilfs(&["profile".as_ref(), "check".as_ref(), p.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = s(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "{}:4:3: visibility.hdie: unknown field `hdie`, expected one of",
            p.display()
        )),
        "{err}"
    );

    std::fs::write(&p, "version = 1\n[visibility]\ndeny = [\"[oops\"]\n").unwrap();
    let out = veilfs(&["profile".as_ref(), "check".as_ref(), p.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(s(&out.stderr).contains(":3:9: visibility.deny[0]: invalid pattern `[oops`"));

    let missing = dir.path().join("missing.toml");
    let out = veilfs(&["profile".as_ref(), "check".as_ref(), missing.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(s(&out.stderr).contains("cannot read profile"));
}

#[test]
fn check_prints_warnings_but_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.toml");
    std::fs::write(&p, "version = 1\n[write]\nwritable = [\"*.rs\"]\n").unwrap();
    let out = veilfs(&["profile".as_ref(), "check".as_ref(), p.as_os_str()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(s(&out.stderr).starts_with(&format!("warning: {}:3:12: write.writable:", p.display())));
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for d in [".ssh", "src", ".git/objects/ab", "docs"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    for f in [
        ".env",
        ".env.example",
        "src/main.rs",
        "key.pem",
        ".ssh/id_rsa",
        "docs/a.pdf",
        "docs/Notes.MD",
    ] {
        std::fs::write(r.join(f), "x").unwrap();
    }
    std::os::unix::fs::symlink("/etc/passwd", r.join("pw")).unwrap();
    std::os::unix::fs::symlink("src/main.rs", r.join("ok")).unwrap();
    std::fs::write(r.join(OsStr::from_bytes(b"bad\xffname.pem")), "x").unwrap();
    dir
}

#[test]
fn scan_lists_hidden_paths_and_reasons() {
    let t = tree();
    let out = veilfs(&["scan".as_ref(), t.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    let stdout = s(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "hidden\t.env\tdenied by pattern `.env*`",
            "hidden\t.ssh\tdenied by pattern `.ssh/`",
            "hidden\tbad\\xffname.pem\tdenied by pattern `*.pem`",
            "hidden\tkey.pem\tdenied by pattern `*.pem`",
            "hidden\tpw\tsymlink pointing outside the scope",
        ],
        "{stdout}"
    );
    // .ssh/id_rsa is not listed: hidden directories are not descended into.
    let err = s(&out.stderr);
    assert!(err.contains("10 visible, 5 hidden"), "{err}");
}

#[test]
fn scan_json_is_lossless_for_non_utf8_names() {
    let t = tree();
    let out = veilfs(&["scan".as_ref(), "--json".as_ref(), t.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    let recs: Vec<serde_json::Value> = s(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 5);
    assert!(recs.iter().all(|r| r["hidden"] == true));
    let bad = recs
        .iter()
        .find(|r| r.get("path_bytes").is_some())
        .expect("non-UTF-8 record");
    let bytes: Vec<u8> = bad["path_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(bytes, b"bad\xffname.pem");
    assert_eq!(bad["reason_code"], "denied");
    assert_eq!(bad["pattern"], "*.pem");
    let ssh = recs.iter().find(|r| r["path"] == ".ssh").unwrap();
    assert_eq!(ssh["kind"], "dir");
    assert_eq!(ssh["reason"], "denied by pattern `.ssh/`");
}

#[test]
fn scan_all_shows_what_the_strict_profiles_allow_list_hides_and_why() {
    let t = tree();
    let strict = profiles().join("strict.toml");
    let out = veilfs(&[
        "scan".as_ref(),
        "--all".as_ref(),
        "--profile".as_ref(),
        strict.as_os_str(),
        t.path().as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", s(&out.stderr));
    let stdout = s(&out.stdout);
    assert!(stdout.contains("visible\tdocs/a.pdf\n"), "{stdout}");
    assert!(stdout.contains("visible\tdocs/Notes.MD\n"), "{stdout}");
    assert!(stdout.contains("visible\tsrc\n"), "{stdout}");
    assert!(
        stdout.contains("hidden\tsrc/main.rs\tnot in the profile's allow-list\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hidden\t.git\tdenied by pattern `.*`\n"),
        "{stdout}"
    );
}

#[test]
fn scan_with_a_bad_profile_exits_2() {
    let t = tree();
    let p = t.path().join("bad.toml");
    std::fs::write(&p, "version = 3\n").unwrap();
    let out = veilfs(&[
        "scan".as_ref(),
        "--profile".as_ref(),
        p.as_os_str(),
        t.path().as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(s(&out.stderr).contains(":1:11: version: unsupported profile version 3"));
}

// ---- hot path: policy queries do not allocate --------------------------------------------------

mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ALLOCS: Cell<usize> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: forwards every call unchanged to the system allocator; only counts allocations
    // made by the current thread (a const thread-local Cell, which itself never allocates).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as our caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as our caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as our caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    pub fn count() -> usize {
        ALLOCS.with(|c| c.get())
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

#[test]
fn policy_queries_do_not_allocate() {
    use veilfs::{EntryKind, Policy};
    use veilfs::{Profile, WriteMode};
    let dev = Profile::load(&profiles().join("developer.toml")).unwrap();
    let policies = [
        Policy::new(&Profile::builtin_default()).unwrap(),
        Policy::new(&dev).unwrap().with_mode(WriteMode::Snapshot),
        Policy::new(&Profile::load(&profiles().join("strict.toml")).unwrap()).unwrap(),
    ];
    let raw = Path::new(OsStr::from_bytes(b"caf\xe9/r\xe9sum\xe9.pdf"));
    let paths = [
        Path::new("src/main.rs"),
        Path::new("a/b/c/d/lib.rs"),
        Path::new(".git/objects/ab/cdef"),
        Path::new("docs/report.pdf"),
        Path::new("ünïcødé/ファイル.md"),
        raw,
    ];
    let target = Some(Path::new("../x"));
    // Counts allocations of the queries that answer "visible" (a hidden verdict allocates its
    // reason, which is the rare path).
    let run = |p: &Policy| -> usize {
        let mut allocs = 0;
        let mut visible = |f: &dyn Fn() -> Result<(), veilfs::Hidden>| {
            let before = counting::count();
            let r = std::hint::black_box(f());
            if r.is_ok() {
                allocs += counting::count() - before;
            }
        };
        for rel in paths {
            visible(&|| p.visibility(rel, EntryKind::File, 10, None));
            visible(&|| p.path_visibility(rel, EntryKind::Dir, 0, None));
            visible(&|| p.visibility(rel, EntryKind::Symlink, 0, target));
        }
        let before = counting::count();
        for rel in paths {
            std::hint::black_box(p.writable(rel));
            std::hint::black_box(p.unscannable_allowed(rel));
        }
        allocs + counting::count() - before
    };
    // The counter works:
    let before = counting::count();
    std::hint::black_box(String::from("x"));
    assert!(counting::count() > before);
    for p in &policies {
        run(p); // warm-up: thread-local match buffer, regex caches
        assert_eq!(run(p), 0, "allocations on the query path");
    }
}

//! Binaries through a real mount (issue #16): the strings inside them go through the same rules
//! as text, and matches are masked in place, so a binary keeps its size and stays loadable.
//! Each test failed on the code before: the default profile served `.pyc` and object files
//! unscanned, and refused every other binary, including text with one NUL byte.

use crate::common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::Mount;

/// Made-up values of the shapes `github-pat` and `aws-access-key` mask.
const TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1Q";
const AWS_ID: &str = "AKIAQ7XZ4RTY2MN3KBWP";

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn compile_pyc(dir: &Path) -> String {
    let out = Command::new("python3")
        .args(["-m", "py_compile", "settings.py"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pyc = fs::read_dir(dir.join("__pycache__"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("settings.") && n.ends_with(".pyc"))
        .expect("no settings.*.pyc");
    format!("__pycache__/{pyc}")
}

#[test]
fn python_importing_settings_through_the_mount_gets_the_mask_not_the_token() {
    let s = tempfile::tempdir().unwrap();
    fs::write(
        s.path().join("settings.py"),
        format!("DEBUG = False\nAPI_TOKEN = \"{TOKEN}\"\nNAME = \"demo\"\n"),
    )
    .unwrap();
    let pyc = compile_pyc(s.path());
    let real_pyc = fs::read(s.path().join(&pyc)).unwrap();
    assert!(contains(&real_pyc, TOKEN.as_bytes()));
    let m = Mount::start(s.path(), &[]);

    // `grep -a` through the mount: no token in the bytecode, and its size is the real one.
    let seen = fs::read(m.path(&pyc)).unwrap();
    assert!(
        !contains(&seen, TOKEN.as_bytes()),
        "token in the served .pyc"
    );
    assert!(contains(&seen, b"<redacted:github-pat>"));
    assert_eq!(seen.len(), real_pyc.len());
    assert_eq!(
        fs::metadata(m.path(&pyc)).unwrap().size(),
        real_pyc.len() as u64
    );
    // Only the token's bytes changed.
    let diff: Vec<usize> = (0..seen.len())
        .filter(|&i| seen[i] != real_pyc[i])
        .collect();
    assert!(diff.len() <= TOKEN.len(), "{} bytes changed", diff.len());

    // Python trusts the cached bytecode (masking keeps settings.py's size and mtime) and loads
    // the masked one: it prints the mask.
    let out = Command::new("python3")
        .args(["-v", "-c", "import settings; print(settings.API_TOKEN)"])
        .current_dir(m.path(""))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONPATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains(TOKEN),
        "python printed the token: {stdout}"
    );
    assert!(stdout.starts_with("<redacted:github-pat>"), "{stdout}");
    assert_eq!(stdout.trim_end().len(), TOKEN.len());
    assert!(
        stderr.contains(&format!("code object from '{}", m.path(&pyc).display()))
            || stderr.contains(&format!("matches {}", m.path("settings.py").display())),
        "the .pyc was not used: {stderr}"
    );
}

#[test]
fn an_object_file_with_strings_and_a_utf16_token_is_served_masked_in_place() {
    let s = tempfile::tempdir().unwrap();
    let mut obj = b"\x7fELF\x02\x01\x01\x00".to_vec();
    obj.extend([0u8; 56]);
    for i in 0..2000u32 {
        obj.extend_from_slice(&(i.wrapping_mul(2654435761) % 977).to_le_bytes());
    }
    obj.extend_from_slice(format!("\0aws_key={AWS_ID}\0").as_bytes());
    obj.push(0x11);
    let wide_at = obj.len();
    obj.extend(utf16le(&format!("Authorization: token {TOKEN}")));
    obj.extend([0, 0, 0x90, 0x90]);
    fs::create_dir(s.path().join("build")).unwrap();
    fs::write(s.path().join("build/thing.o"), &obj).unwrap();
    // Compressed content (a zstd frame) is unscannable, so refused.
    let mut z = b"\x28\xb5\x2f\xfd\x00\x58\x00\x00".to_vec();
    z.extend(TOKEN.as_bytes());
    fs::write(s.path().join("blob.zst"), &z).unwrap();
    let m = Mount::start(s.path(), &[]);

    let seen = fs::read(m.path("build/thing.o")).unwrap();
    assert_eq!(seen.len(), obj.len());
    assert!(!contains(&seen, AWS_ID.as_bytes()));
    assert!(!contains(&seen, &utf16le(TOKEN)), "UTF-16 token served");
    assert!(contains(&seen, &utf16le("<redacted:github-pat>")));
    assert!(contains(&seen, b"<redacted:aws-access"));
    // Everything before the strings, and the UTF-16 text before the token, is untouched.
    assert_eq!(&seen[..wide_at - 40], &obj[..wide_at - 40]);
    let prefix = utf16le("Authorization: token ");
    assert_eq!(&seen[wide_at..wide_at + prefix.len()], &prefix[..]);
    assert_eq!(&seen[seen.len() - 4..], &obj[obj.len() - 4..]);

    let e = fs::read(m.path("blob.zst")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
}

#[test]
fn a_text_file_grown_with_nul_bytes_is_read_masked_not_refused() {
    let s = tempfile::tempdir().unwrap();
    let text = format!("notes\ntoken: {TOKEN}\nend\n");
    fs::write(s.path().join("notes.txt"), &text).unwrap();
    // What `truncate -s +16 notes.txt` leaves: NUL bytes at the end.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(s.path().join("notes.txt"))
        .unwrap();
    f.set_len(text.len() as u64 + 16).unwrap();
    drop(f);
    let m = Mount::start(s.path(), &[]);
    let seen = fs::read(m.path("notes.txt")).unwrap();
    assert_eq!(seen.len(), text.len() + 16);
    let shown = String::from_utf8_lossy(&seen);
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(
        shown.starts_with("notes\ntoken: <redacted:github-pat>"),
        "{shown}"
    );
    assert!(seen.ends_with(&[0u8; 16]));
}

#[test]
fn a_gzip_holding_a_token_is_refused_and_a_clean_one_is_served() {
    use std::io::Write;
    let gz = |text: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let s = tempfile::tempdir().unwrap();
    let clean = gz("2026-03-01 12:00:00 INFO started\n");
    fs::write(s.path().join("app.log.gz"), &clean).unwrap();
    fs::write(
        s.path().join("debug.log.gz"),
        gz(&format!("2026-03-01 12:00:01 DEBUG using token {TOKEN}\n")),
    )
    .unwrap();
    let m = Mount::start(s.path(), &[]);
    assert_eq!(fs::read(m.path("app.log.gz")).unwrap(), clean);
    let e = fs::read(m.path("debug.log.gz")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
}

/// Opacity follows the name: renaming a masked binary to a name the profile calls opaque (and
/// serves unscanned) would unmask it, so the rename is refused, and a hard link under such a
/// name does not make the file opaque.
#[test]
fn a_masked_binary_cannot_be_renamed_or_linked_to_an_opaque_name() {
    const PROFILE: &str = r#"
version = 1
name = "opaque-rename"
[redaction]
rule_sets = ["secrets"]
opaque = ["*.png"]
unscannable_allow = ["*.png"]
[write]
mode = "snapshot"
"#;
    fn seed(s: &Path) {
        let mut lib = b"\x7fELF\x02\x01\x01\x00\x00\x00".to_vec();
        lib.extend_from_slice(format!("token={TOKEN}\0").as_bytes());
        fs::write(s.join("lib.so"), lib).unwrap();
    }
    let e = common::WriteEnv::new(PROFILE, seed);
    let m = e.mount();
    let seen = fs::read(m.path("lib.so")).unwrap();
    assert!(!contains(&seen, TOKEN.as_bytes()));
    let r = fs::rename(m.path("lib.so"), m.path("lib.png"));
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EACCES));
    match fs::hard_link(m.path("lib.so"), m.path("lib2.png")) {
        Err(err) => assert_eq!(err.raw_os_error(), Some(libc::EACCES)),
        Ok(()) => {
            let seen = fs::read(m.path("lib2.png")).unwrap();
            assert!(
                !contains(&seen, TOKEN.as_bytes()),
                "unmasked through a link"
            );
        }
    }
    assert!(!contains(
        &fs::read(m.path("lib.so")).unwrap(),
        TOKEN.as_bytes()
    ));
}

//! Decoy contents: credential-shaped canary files the view shows (`[decoys]`) and the real
//! folder never holds.
//!
//! Why: an agent that was told to summarise a folder has no business opening
//! `.aws/credentials`. A prompt-injected one will look for exactly that. A decoy is a tripwire:
//! it looks and reads like the real thing (an AWS key pair, an OpenSSH private key, a `.env`
//! with a GitHub token), so an attacker cannot tell it apart, and opening it raises a critical
//! audit event (and, if the profile says so, trips the damage breaker).
//!
//! The values are canaries: derived from a per-mount random seed and the decoy's path, so
//! they differ for every mount, and a leaked one names the session it came from (the
//! `decoy-placed` audit events of the session list each decoy's canary key id). They follow
//! the shapes the engine's own rules look for (`aws-access-key-id`, `github-pat` with its
//! checksum, `openssh-private-key` with a well-formed key blob), so a copy pasted anywhere
//! is caught by the same scanners as a real secret. The mount serves them as they are: the
//! redaction engine never sees a decoy (masking it would tell the attacker what it is).
//!
//! Pure: the contents are a function of (seed, path).

use std::path::Path;

/// One decoy's bytes and the value that identifies its mount (an AWS key id or a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoy {
    pub bytes: Vec<u8>,
    pub canary: String,
}

/// The paths placed when `[decoys]` lists none.
pub(crate) const DEFAULT_PATHS: [&str; 3] =
    [".aws/credentials", ".env.production", ".ssh/id_ed25519"];

/// A stream of pseudo-random bytes for one decoy: blake3's XOF keyed by the seed.
struct Stream(blake3::OutputReader);

impl Stream {
    fn new(seed: &[u8; 32], path: &Path, what: &str) -> Stream {
        let mut h = blake3::Hasher::new_keyed(seed);
        h.update(path.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(what.as_bytes());
        Stream(h.finalize_xof())
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.0.fill(&mut b);
        b
    }

    /// `n` characters drawn from `alphabet` (rejection sampling keeps them uniform).
    fn chars(&mut self, n: usize, alphabet: &[u8]) -> String {
        let limit = 256 - 256 % alphabet.len();
        let mut out = String::with_capacity(n);
        while out.len() < n {
            for b in self.bytes(n) {
                if (b as usize) < limit && out.len() < n {
                    out.push(alphabet[b as usize % alphabet.len()] as char);
                }
            }
        }
        out
    }
}

const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// An AWS access key pair: a key id of the shape AWS issues (`AKIA` + 16 base32) and a
/// 40-character secret.
fn aws_pair(s: &mut Stream) -> (String, String) {
    (format!("AKIA{}", s.chars(16, BASE32)), s.chars(40, BASE64))
}

/// A GitHub personal access token: `ghp_`, 30 random characters and the base62 CRC32 of
/// them that GitHub appends (scanners check it).
fn github_token(s: &mut Stream) -> String {
    let body = s.chars(30, BASE62);
    let mut crc = crc32fast::hash(body.as_bytes());
    let mut sum = [b'0'; 6];
    for c in sum.iter_mut().rev() {
        *c = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    format!("ghp_{body}{}", String::from_utf8_lossy(&sum))
}

fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn ssh_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// An unencrypted OpenSSH ed25519 private key file, laid out as `ssh-keygen` writes one
/// (magic, cipher and kdf "none", the public key, the private section with its check
/// integers, key, comment and padding), 70 base64 characters a line.
fn openssh_key(s: &mut Stream, comment: &str) -> (String, String) {
    let public = s.bytes(32);
    let seed = s.bytes(32);
    let check = s.bytes(4);
    let mut pubblob = Vec::new();
    ssh_string(&mut pubblob, b"ssh-ed25519");
    ssh_string(&mut pubblob, &public);
    let mut private = Vec::new();
    private.extend_from_slice(&check);
    private.extend_from_slice(&check);
    ssh_string(&mut private, b"ssh-ed25519");
    ssh_string(&mut private, &public);
    ssh_string(&mut private, &[seed.as_slice(), public.as_slice()].concat());
    ssh_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut blob = b"openssh-key-v1\0".to_vec();
    ssh_string(&mut blob, b"none");
    ssh_string(&mut blob, b"none");
    ssh_string(&mut blob, b"");
    blob.extend_from_slice(&1u32.to_be_bytes());
    ssh_string(&mut blob, &pubblob);
    ssh_string(&mut blob, &private);
    let b64 = base64(&blob);
    let mut text = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(70) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    (text, format!("ssh-ed25519 {}", base64(&pubblob)))
}

/// The decoy placed at `path` (relative to the scope) for the mount whose seed is `seed`.
/// The shape follows the name: AWS credentials, an SSH private key, or an env file.
pub(crate) fn contents(seed: &[u8; 32], path: &Path) -> Decoy {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut s = Stream::new(seed, path, "decoy-v1");
    let in_aws = path
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|p| p == ".aws");
    if name == "credentials" && in_aws || name.ends_with(".aws-credentials") {
        let (id, secret) = aws_pair(&mut s);
        let text = format!(
            "[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\nregion = us-east-1\n"
        );
        return Decoy {
            bytes: text.into_bytes(),
            canary: id,
        };
    }
    if name.starts_with("id_") && !name.ends_with(".pub") {
        let user = ["deploy", "ci", "admin", "ops"][s.bytes(1)[0] as usize % 4];
        let (text, public) = openssh_key(&mut s, &format!("{user}@build-01"));
        return Decoy {
            bytes: text.into_bytes(),
            canary: public,
        };
    }
    // An env file (`.env.production`) or anything else: the variables a service reads.
    let (id, secret) = aws_pair(&mut s);
    let token = github_token(&mut s);
    let db = s.chars(24, BASE62);
    let text = format!(
        "# production\nNODE_ENV=production\nAWS_ACCESS_KEY_ID={id}\nAWS_SECRET_ACCESS_KEY={secret}\nAWS_REGION=us-east-1\nGITHUB_TOKEN={token}\nDATABASE_URL=postgres://app:{db}@db-prod.internal:5432/app\n"
    );
    Decoy {
        bytes: text.into_bytes(),
        canary: id,
    }
}

/// A decoy path as the profile may give it: relative, each component a plain name.
pub(crate) fn check_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty decoy path".into());
    }
    if p.starts_with('/') {
        return Err("a decoy path is relative to the folder (no leading /)".into());
    }
    for c in p.split('/') {
        match c {
            "" => return Err("empty component (// or a trailing /)".into()),
            "." | ".." => return Err("`.` and `..` are not allowed".into()),
            c if c.len() > 255 => return Err("a component is longer than 255 bytes".into()),
            c if c.contains('\0') => return Err("NUL in a decoy path".into()),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::{Engine, ScanOutcome};

    const SEED: [u8; 32] = [7; 32];

    fn rules_found(data: &[u8]) -> Vec<String> {
        let e = Engine::load(&["secrets".into()], &[]).unwrap();
        match e.scan_with(&e.all_rules(), data) {
            ScanOutcome::Redact(r) => crate::audit::rules_fired(&r).0,
            other => panic!("no secret found: {other:?}"),
        }
    }

    /// A decoy must look like the real thing to a scanner too: the engine's own rules find
    /// in it the secrets of the shape its name promises.
    #[test]
    fn decoys_carry_the_shapes_the_engine_looks_for() {
        let aws = contents(&SEED, Path::new(".aws/credentials"));
        assert!(aws.canary.starts_with("AKIA") && aws.canary.len() == 20);
        let found = rules_found(&aws.bytes);
        assert!(found.iter().any(|r| r == "aws-access-key-id"), "{found:?}");

        let env = contents(&SEED, Path::new(".env.production"));
        let found = rules_found(&env.bytes);
        for want in ["aws-access-key-id", "github-pat"] {
            assert!(found.iter().any(|r| r == want), "{want} not in {found:?}");
        }

        let key = contents(&SEED, Path::new(".ssh/id_ed25519"));
        let text = String::from_utf8(key.bytes.clone()).unwrap();
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"));
        let found = rules_found(&key.bytes);
        assert!(
            found.iter().any(|r| r == "openssh-private-key"),
            "{found:?}"
        );
    }

    #[test]
    fn canaries_differ_per_mount_and_per_path_and_are_stable_for_one() {
        let p = Path::new(".aws/credentials");
        assert_eq!(contents(&SEED, p), contents(&SEED, p));
        assert_ne!(contents(&SEED, p).canary, contents(&[8; 32], p).canary);
        assert_ne!(
            contents(&SEED, p).canary,
            contents(&SEED, Path::new("prod/.aws/credentials")).canary
        );
    }

    #[test]
    fn github_tokens_carry_their_checksum() {
        let mut s = Stream::new(&SEED, Path::new("x"), "t");
        let t = github_token(&mut s);
        assert_eq!(t.len(), 40);
        let body = &t[4..34];
        let mut crc = crc32fast::hash(body.as_bytes()) as u64;
        let mut n = 0u64;
        for c in t[34..].bytes() {
            n = n * 62 + BASE62.iter().position(|&b| b == c).unwrap() as u64;
        }
        crc %= 62u64.pow(6);
        assert_eq!(n, crc);
    }

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn decoy_paths_are_plain_relative_names() {
        assert!(check_path(".aws/credentials").is_ok());
        for bad in ["", "/etc/x", "a//b", "a/", "../x", "a/./b"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}

//! Cryptographic primitives: the Fernet key ring (rotation) and random identifiers.
//!
//! Owns key parsing and encryption/decryption of opaque bytes. It knows nothing of sessions,
//! cookies or HTTP; callers decide what is sealed. Keys are held only inside `fernet::Fernet`
//! values and are never printed.

use base64::Engine;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The keys from `OIDC_TOKEN_ENCRYPTION_KEY`: comma-separated Fernet keys. The first encrypts,
/// every key decrypts. Replicas of one deployment must all open what any of them seals, so a
/// rotation takes three roll-outs: append the new key; move it first; drop the old one once
/// nothing it sealed is still needed (prepending at once would have the updated replicas seal
/// what the others cannot open, logging users out during the roll-out).
pub struct KeyRing {
    ring: fernet::MultiFernet,
    count: usize,
    /// SHA-256 of the keys as given: tells two rings apart (a reload) without keeping them.
    fingerprint: String,
    /// Values read from the store that no key opens, and when that was last logged.
    undecryptable: AtomicU64,
    warned_at: AtomicI64,
}

/// At most one warning a minute about stored values no key opens: each request of a session
/// sealed with a removed key would otherwise log one.
const UNDECRYPTABLE_WARN_EVERY_SECS: i64 = 60;

/// Why a key ring could not be built. Never carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("OIDC_TOKEN_ENCRYPTION_KEY is empty")]
    Empty,
    #[error(
        "OIDC_TOKEN_ENCRYPTION_KEY entry #{0} is not a valid Fernet key (expected 44 url-safe \
         base64 characters encoding 32 bytes; generate one with `sso-sidecar gen-key`)"
    )]
    Invalid(usize),
}

impl KeyRing {
    /// Parses one key or several comma-separated keys (spaces around commas are ignored).
    pub fn parse(keys: &str) -> Result<Self, KeyError> {
        let mut fernets = Vec::new();
        for (i, key) in keys.split(',').map(str::trim).enumerate() {
            if key.is_empty() {
                continue;
            }
            let f = fernet::Fernet::new(key).ok_or(KeyError::Invalid(i + 1))?;
            fernets.push(f);
        }
        if fernets.is_empty() {
            return Err(KeyError::Empty);
        }
        let count = fernets.len();
        let given: Vec<&str> = keys
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        Ok(KeyRing {
            ring: fernet::MultiFernet::new(fernets),
            count,
            fingerprint: digest(&given),
            undecryptable: AtomicU64::new(0),
            warned_at: AtomicI64::new(i64::MIN),
        })
    }

    /// Whether `other` holds the same keys in the same order.
    pub fn same_keys(&self, other: &KeyRing) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// Number of keys in the ring (the first one encrypts).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encrypts with the primary key.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        self.ring.encrypt(plaintext)
    }

    /// Decrypts with any key of the ring; `None` when tampered, foreign or malformed.
    pub fn open(&self, token: &str) -> Option<Vec<u8>> {
        self.ring.decrypt(token).ok()
    }

    /// [`KeyRing::open`] for a token read as bytes (from the store): `None` when not text.
    pub fn open_bytes(&self, token: &[u8]) -> Option<Vec<u8>> {
        std::str::from_utf8(token).ok().and_then(|t| self.open(t))
    }

    /// [`KeyRing::open_bytes`] for a value this deployment wrote to its store (not one a client
    /// sent): one that no key opens means a key was removed too soon, or replicas hold
    /// different keys, so it is counted and, once a minute at most, logged.
    pub fn open_stored(&self, token: &[u8]) -> Option<Vec<u8>> {
        let plain = self.open_bytes(token);
        if plain.is_none() {
            let n = self.undecryptable.fetch_add(1, Ordering::Relaxed) + 1;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let last = self.warned_at.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= UNDECRYPTABLE_WARN_EVERY_SECS
                && self
                    .warned_at
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    since_start = n,
                    "a value in the session store opens with no key of OIDC_TOKEN_ENCRYPTION_KEY \
                     and is treated as absent (its user logs in again): the key that sealed it \
                     was removed, or replicas run with different keys. To rotate, add the new \
                     key last and roll out, then move it first and roll out, and drop the old \
                     one only after that"
                );
            }
        }
        plain
    }

    /// How many stored values no key opened since start
    /// (`sso_sidecar_store_values_undecryptable_total`).
    pub fn undecryptable(&self) -> u64 {
        self.undecryptable.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing({} key(s), [redacted])", self.count)
    }
}

/// A fresh Fernet key, formatted like Python's `Fernet.generate_key()`.
pub fn generate_key() -> String {
    fernet::Fernet::generate_key()
}

/// `n` random bytes from the operating system's CSPRNG, url-safe base64 without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    fill_random(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&buf)
}

/// Fills `buf` from the OS CSPRNG. Failure of the OS generator is not recoverable: a proxy
/// that cannot make unguessable ids must not keep serving, so this aborts the request task.
pub fn fill_random(buf: &mut [u8]) {
    if let Err(e) = getrandom::getrandom(buf) {
        // There is no safe fallback for a broken CSPRNG.
        panic!("the operating system's random generator failed: {e}");
    }
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hex SHA-256 of `parts` joined by NUL: store keys never contain the value they index.
pub fn digest(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            ctx.update(b"\0");
        }
        ctx.update(p.as_bytes());
    }
    // By hand, without `format!` per byte: this runs on every request.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in ctx.finish().as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_44_urlsafe_chars_and_parse() {
        let k = generate_key();
        assert_eq!(k.len(), 44);
        assert!(k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'='));
        assert!(KeyRing::parse(&k).is_ok());
    }

    #[test]
    fn rotation_first_key_encrypts_all_decrypt() {
        let old = generate_key();
        let new = generate_key();
        let old_ring = KeyRing::parse(&old).unwrap();
        let sealed_with_old = old_ring.seal(b"payload");
        let rotated = KeyRing::parse(&format!("{new}, {old}")).unwrap();
        assert_eq!(rotated.len(), 2);
        assert_eq!(rotated.open(&sealed_with_old).unwrap(), b"payload");
        let sealed_with_new = rotated.seal(b"x");
        assert!(old_ring.open(&sealed_with_new).is_none());
        assert_eq!(
            KeyRing::parse(&new)
                .unwrap()
                .open(&sealed_with_new)
                .unwrap(),
            b"x"
        );
    }

    #[test]
    fn bad_keys_are_named_by_position() {
        let good = generate_key();
        assert_eq!(
            KeyRing::parse(&format!("{good},not-a-key")).unwrap_err(),
            KeyError::Invalid(2)
        );
        assert_eq!(KeyRing::parse(" , ").unwrap_err(), KeyError::Empty);
        let msg = KeyRing::parse("short").unwrap_err().to_string();
        assert!(
            !msg.contains("short"),
            "error must not echo key material: {msg}"
        );
    }

    #[test]
    fn tampered_tokens_do_not_open() {
        let ring = KeyRing::parse(&generate_key()).unwrap();
        let mut t = ring.seal(b"abc").into_bytes();
        let i = t.len() / 2;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        assert!(ring.open(&String::from_utf8(t).unwrap()).is_none());
        assert!(ring.open("garbage").is_none());
    }

    #[test]
    fn random_tokens_differ_and_have_the_right_size() {
        let a = random_token(32);
        let b = random_token(32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}

//! SHA-256 digests as audits print them and configs pin them.

use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// How a pinned digest is written, for error messages.
pub const SHA256_FORM: &str = "in lower-case hex (64 characters, as `sha256sum` and `chimera audit` print it)";

/// Whether `digest` is a SHA-256 as [`SHA256_FORM`] says.
pub fn is_sha256_hex(digest: &str) -> bool {
    digest.len() == 64 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

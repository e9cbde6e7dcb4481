//! sha256 digests: validation (they become file names in the cache, so a
//! digest from a registry must never be able to name another path) and
//! incremental hashing.

use sha2::{Digest as _, Sha256};

use crate::OciError;

/// The 64 hex digits of a `sha256:` digest, after strict validation.
pub fn hex_of(digest: &str) -> Result<&str, OciError> {
    let bad = || OciError::BadDigest {
        digest: digest.to_string(),
    };
    let hex = digest.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(hex)
    } else {
        Err(bad())
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Hashes a blob as it streams past.
#[derive(Debug, Default)]
pub(crate) struct Hasher(Sha256);

impl Hasher {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub(crate) fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_strictly() {
        let good = format!("sha256:{}", "0f".repeat(32));
        assert_eq!(hex_of(&good).unwrap().len(), 64);
        for bad in [
            "sha256:".to_string(),
            format!("sha256:{}", "0F".repeat(32)),
            format!("sha512:{}", "0f".repeat(32)),
            format!("sha256:{}/..", "0f".repeat(31)),
            format!("sha256:{}0", "0f".repeat(32)),
        ] {
            assert!(hex_of(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            sha256_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

//! The cluster key: the one secret members share, from which gossip's seal key and the
//! RPC certificate authority are derived.

use std::fmt;
use std::path::Path;

/// The length of a cluster key in bytes.
pub const CLUSTER_KEY_BYTES: usize = 32;

/// A cluster key: 32 random bytes, written as 64 hexadecimal digits.
///
/// Its `Debug` form hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; CLUSTER_KEY_BYTES]);

/// Errors from reading a cluster key.
#[derive(Debug, thiserror::Error)]
pub enum ClusterKeyError {
    /// The text is not 64 hexadecimal digits.
    #[error(
        "invalid cluster key from {source_name}: {reason}; expected 64 hexadecimal digits (make one with `murmur keygen`)"
    )]
    Invalid {
        /// The key's source: a file path or a variable name.
        source_name: String,
        /// The problem with it.
        reason: String,
    },
    /// The key file could not be read.
    #[error("failed to read the cluster key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl ClusterKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; CLUSTER_KEY_BYTES];
        rand::fill(&mut bytes);
        Self(bytes)
    }

    /// Parses 64 hexadecimal digits; surrounding whitespace is ignored. `source_name`
    /// names where the text came from, for the error message.
    ///
    /// # Errors
    ///
    /// [`ClusterKeyError::Invalid`] naming the length or the first bad character.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ClusterKeyError> {
        let invalid = |reason: String| ClusterKeyError::Invalid {
            source_name: source_name.to_string(),
            reason,
        };
        let text = text.trim();
        if text.len() != CLUSTER_KEY_BYTES * 2 {
            return Err(invalid(format!("it has {} characters", text.len())));
        }
        let mut bytes = [0u8; CLUSTER_KEY_BYTES];
        for (index, pair) in text.as_bytes().chunks(2).enumerate() {
            let digit = |byte: u8| {
                (byte as char).to_digit(16).ok_or_else(|| {
                    invalid(format!("{:?} is not a hexadecimal digit", byte as char))
                })
            };
            bytes[index] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(Self(bytes))
    }

    /// Reads a key file holding 64 hexadecimal digits.
    ///
    /// # Errors
    ///
    /// [`ClusterKeyError::Read`] when the file cannot be read, [`ClusterKeyError::Invalid`]
    /// when it does not hold a key.
    pub fn read_file(path: &Path) -> Result<Self, ClusterKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterKeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; CLUSTER_KEY_BYTES] {
        &self.0
    }

    /// The key as 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(hidden)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        let key = ClusterKey::generate();
        assert_eq!(ClusterKey::parse(&key.to_hex(), "test").unwrap(), key);
        assert_ne!(ClusterKey::generate(), key);
    }

    #[test]
    fn wrong_length_names_the_source_and_length() {
        let error = ClusterKey::parse("abcd", "key.txt")
            .unwrap_err()
            .to_string();
        assert!(error.contains("key.txt"), "{error}");
        assert!(error.contains("4 characters"), "{error}");
        assert!(error.contains("murmur keygen"), "{error}");
    }

    #[test]
    fn bad_digit_is_named() {
        let text = format!("{}zz", "0".repeat(62));
        let error = ClusterKey::parse(&text, "MURMUR_CLUSTER_KEY")
            .unwrap_err()
            .to_string();
        assert!(error.contains("'z'"), "{error}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let error = ClusterKey::read_file(Path::new("/nonexistent/murmur.key")).unwrap_err();
        assert!(matches!(error, ClusterKeyError::Read { .. }));
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(
            format!("{:?}", ClusterKey::generate()),
            "ClusterKey(hidden)"
        );
    }
}

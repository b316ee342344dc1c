//! A node's key pair and the [`NodeId`] derived from it.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use data_encoding::BASE32_NOPAD;
use rcgen::{KeyPair, PKCS_ED25519};
use rustls::pki_types::PrivatePkcs8KeyDer;
use thiserror::Error;
use tracing::{info, warn};

/// Name of the key file inside a node's data directory.
pub const KEY_FILE_NAME: &str = "node.key";

/// Length of a [`NodeId`] in its text form: 32 bytes in base32 without padding.
pub const NODE_ID_TEXT_LEN: usize = 52;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): a SEQUENCE holding the
/// algorithm identifier 1.3.101.112 and a 33-byte BIT STRING whose first byte is zero.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A node's identity: the blake3 hash of its Ed25519 public key.
///
/// Shown as 52 lowercase base32 characters without padding, and parsed back from that form
/// with [`FromStr`]. The TLS certificate of a node names its id, and callers check that the
/// certificate's key hashes to the id they expected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// Derives the id of an Ed25519 public key.
    pub fn from_public_key(public_key: &[u8; 32]) -> NodeId {
        NodeId(*blake3::hash(public_key).as_bytes())
    }

    /// Creates an id from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> NodeId {
        NodeId(bytes)
    }

    /// Returns the id's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derives the id from a DER SubjectPublicKeyInfo, or returns `None` when the key is not
    /// Ed25519.
    pub(crate) fn from_spki(spki: &[u8]) -> Option<NodeId> {
        let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
        let key: &[u8; 32] = key.try_into().ok()?;
        Some(NodeId::from_public_key(key))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = BASE32_NOPAD.encode(&self.0);
        text.make_ascii_lowercase();
        f.write_str(&text)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// The error returned when a string is not a valid [`NodeId`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid node id {input:?}: {reason}")]
pub struct ParseNodeIdError {
    input: String,
    reason: &'static str,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(text: &str) -> Result<NodeId, ParseNodeIdError> {
        let error = |reason| ParseNodeIdError {
            input: text.to_string(),
            reason,
        };
        if text.len() != NODE_ID_TEXT_LEN {
            return Err(error("expected 52 base32 characters"));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            return Err(error("expected only the characters a-z and 2-7"));
        }

        let upper = text.to_ascii_uppercase();
        let bytes = BASE32_NOPAD
            .decode(upper.as_bytes())
            .map_err(|_| error("the last character has bits set past the 32 bytes"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| error("expected 52 base32 characters"))?;
        Ok(NodeId(bytes))
    }
}

impl serde::Serialize for NodeId {
    /// Serializes the id as its 52-character text form, in every format.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<NodeId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A node's Ed25519 key pair.
///
/// Cloning is cheap. `Debug` shows the node id, never the secret key.
#[derive(Clone)]
pub struct Identity {
    pkcs8: Arc<[u8]>,
    node_id: NodeId,
}

/// The error returned when an identity cannot be loaded or created.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The data directory or key file could not be read or written.
    #[error("failed to access key file {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The key file exists but does not hold an Ed25519 PKCS#8 key. Restore the file, or
    /// delete it to give the node a new identity and so a new node id.
    #[error("invalid key file {path}: {reason}")]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// The problem found in the file.
        reason: String,
    },
    /// The system could not generate a key.
    #[error("failed to generate an ed25519 key: {0}")]
    Generate(String),
}

impl Identity {
    /// Loads the key pair from `dir/node.key`, or creates it with mode 0600 on first start.
    ///
    /// Creates `dir` if it is missing. When two processes start on the same directory at
    /// once, both end up with the key that was written first.
    ///
    /// # Errors
    ///
    /// [`IdentityError::Io`] when the directory or file cannot be read or written, and
    /// [`IdentityError::InvalidKey`] when the file contains no Ed25519 key.
    pub fn load_or_generate(dir: impl AsRef<Path>) -> Result<Identity, IdentityError> {
        let dir = dir.as_ref();
        let path = dir.join(KEY_FILE_NAME);
        match fs::read_to_string(&path) {
            Ok(pem) => return Identity::from_key_file(&path, &pem),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(IdentityError::Io { path, source }),
        }

        fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let key_pair = generate_key_pair()?;
        let identity = Identity::from_key_pair(&key_pair);
        if write_new_key_file(&path, &key_pair.serialize_pem())? {
            info!(node_id = %identity.node_id, path = %path.display(), "created node identity");
            return Ok(identity);
        }

        // Another process created the file first; use its key so both agree.
        let pem = fs::read_to_string(&path).map_err(|source| IdentityError::Io {
            path: path.clone(),
            source,
        })?;
        Identity::from_key_file(&path, &pem)
    }

    /// Creates an identity with a fresh key that is kept in memory only.
    ///
    /// # Errors
    ///
    /// [`IdentityError::Generate`] when the system's random source fails.
    pub fn generate() -> Result<Identity, IdentityError> {
        Ok(Identity::from_key_pair(&generate_key_pair()?))
    }

    /// Creates an identity from an Ed25519 key in PKCS#8 PEM form.
    ///
    /// # Errors
    ///
    /// [`IdentityError::InvalidKey`] when the text contains no Ed25519 PKCS#8 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Identity, IdentityError> {
        Identity::from_key_file(Path::new("<memory>"), pem)
    }

    /// Returns the node id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub(crate) fn key_pair(&self) -> Result<KeyPair, rcgen::Error> {
        KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(&self.pkcs8[..]),
            &PKCS_ED25519,
        )
    }

    pub(crate) fn private_key_der(&self) -> PrivatePkcs8KeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.pkcs8.to_vec())
    }

    /// Derives the key that signs QUIC stateless resets. It is stable across restarts, so a
    /// peer that still has a connection to the previous run learns at once that the
    /// connection is gone.
    pub(crate) fn stateless_reset_key(&self) -> [u8; 32] {
        blake3::derive_key("murmur rpc stateless reset key v1", &self.pkcs8)
    }

    /// Derives the key that quinn uses to mark the connection ids it issues. Like the
    /// reset key it is stable across restarts: a restarted endpoint must accept the old
    /// connection ids as its own, or it drops their packets instead of replying with a
    /// stateless reset.
    pub(crate) fn connection_id_key(&self) -> u64 {
        let key = blake3::derive_key("murmur rpc connection id key v1", &self.pkcs8);
        u64::from_le_bytes([
            key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
        ])
    }

    fn from_key_pair(key_pair: &KeyPair) -> Identity {
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(key_pair.public_key_raw());
        Identity {
            pkcs8: Arc::from(key_pair.serialized_der()),
            node_id: NodeId::from_public_key(&public_key),
        }
    }

    fn from_key_file(path: &Path, pem: &str) -> Result<Identity, IdentityError> {
        let invalid = |reason: String| IdentityError::InvalidKey {
            path: path.to_path_buf(),
            reason,
        };
        let key_pair = KeyPair::from_pem(pem).map_err(|error| invalid(error.to_string()))?;
        if key_pair.algorithm() != &PKCS_ED25519 || key_pair.public_key_raw().len() != 32 {
            return Err(invalid("the key is not ed25519".to_string()));
        }
        warn_if_readable_by_others(path);
        Ok(Identity::from_key_pair(&key_pair))
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Writes `pem` to `path` unless the file exists, and returns whether it wrote.
///
/// The key goes to a temporary file first and is then hard-linked into place, so no reader
/// ever sees a half-written key and an existing file is never replaced.
fn write_new_key_file(path: &Path, pem: &str) -> Result<bool, IdentityError> {
    let io_error = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension(format!("key.{}.tmp", std::process::id()));

    let mut file = private_file_options().open(&temporary).map_err(io_error)?;
    let written = file
        .write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    match written {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(io_error(error)),
    }
}

fn generate_key_pair() -> Result<KeyPair, IdentityError> {
    KeyPair::generate_for(&PKCS_ED25519).map_err(|error| IdentityError::Generate(error.to_string()))
}

#[cfg(unix)]
fn private_file_options() -> fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    options
}

#[cfg(not(unix))]
fn private_file_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    options
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warn!(path = %path.display(), mode = format_args!("{mode:o}"), "node key file is readable by other users, expected mode 600");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_text_round_trips() {
        let id = NodeId::from_public_key(&[7; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), NODE_ID_TEXT_LEN);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
    }

    #[test]
    fn node_id_parse_names_bad_input() {
        let error = "abc".parse::<NodeId>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid node id \"abc\": expected 52 base32 characters"
        );

        let upper = NodeId::from_public_key(&[1; 32]).to_string().to_uppercase();
        let error = upper.parse::<NodeId>().unwrap_err();
        assert!(error.to_string().contains("a-z and 2-7"), "{error}");
    }

    #[test]
    fn node_id_serializes_as_text() {
        let id = NodeId::from_public_key(&[9; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<NodeId>("\"nope\"").is_err());
    }

    #[test]
    fn node_id_parse_rejects_trailing_bits() {
        let mut text = NodeId::from_bytes([0; 32]).to_string();
        text.pop();
        text.push('b');
        assert!(text.parse::<NodeId>().is_err());
    }

    #[test]
    fn identity_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_generate(dir.path()).unwrap();
        let second = Identity::load_or_generate(dir.path()).unwrap();
        assert_eq!(first.node_id(), second.node_id());
    }

    #[cfg(unix)]
    #[test]
    fn key_file_has_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_generate(dir.path().join("nested")).unwrap();
        let mode = fs::metadata(dir.path().join("nested").join(KEY_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn invalid_key_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE_NAME), "not a key").unwrap();
        let error = Identity::load_or_generate(dir.path()).unwrap_err();
        assert!(matches!(error, IdentityError::InvalidKey { .. }), "{error}");
    }

    #[test]
    fn node_id_matches_certificate_key() {
        use rcgen::PublicKeyData;
        let identity = Identity::generate().unwrap();
        let key_pair = identity.key_pair().unwrap();
        let spki = key_pair.subject_public_key_info();
        assert_eq!(NodeId::from_spki(&spki), Some(identity.node_id()));
    }

    #[test]
    fn debug_hides_the_secret_key() {
        let identity = Identity::generate().unwrap();
        let text = format!("{identity:?}");
        assert!(text.contains(&identity.node_id().to_string()));
        assert!(!text.contains("pkcs8"));
    }
}

//! The gossip datagram format: sealing with the cluster's keyring, and opening.
//!
//! Every gossip datagram murmur sends has a two-byte header and a body:
//!
//! ```text
//! byte 0      format: 0x6d ('m'), version 1 of this layout
//! byte 1      flags: bit 0 sealed, bit 1 body compressed with zstd; other bits zero
//! sealed:     12-byte nonce, then the body encrypted with ChaCha20-Poly1305 (16-byte tag)
//! open mode:  the body as it is
//! ```
//!
//! The body is one chitchat message as chitchat serializes it. The associated data of the
//! AEAD is the header followed by the cluster name, so a datagram sealed for another
//! cluster that happens to share the key does not open, and neither do flipped flags.
//!
//! A node with a keyring accepts only sealed datagrams; a node in open mode accepts only
//! open ones. Nothing is parsed before the datagram has opened.

use std::fmt;
use std::sync::{Arc, RwLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::Rng;

/// The first byte of every murmur gossip datagram.
pub const FORMAT: u8 = 0x6d;

/// Bytes added to a body by the header, the nonce and the tag of a sealed datagram.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// The largest payload one UDP datagram can carry over IPv4, in bytes.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

const HEADER_LEN: usize = 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const FLAG_SEALED: u8 = 0b01;
const FLAG_COMPRESSED: u8 = 0b10;
const KNOWN_FLAGS: u8 = FLAG_SEALED | FLAG_COMPRESSED;

/// Bodies shorter than this are sent uncompressed: zstd's frame header would eat the gain.
const COMPRESS_FROM: usize = 256;
const ZSTD_LEVEL: i32 = 1;

/// The context string that turns a cluster key into the gossip key. Changing it changes
/// every derived key, so it is part of the wire format.
const GOSSIP_KEY_CONTEXT: &str = "murmur 2026-12 gossip datagram seal key";

/// A 32-byte ChaCha20-Poly1305 key for gossip datagrams.
///
/// Its `Debug` form shows a short fingerprint, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey([u8; 32]);

impl GossipKey {
    /// Derives the gossip key from a cluster key with blake3's `derive_key`.
    ///
    /// Every member given the same cluster key derives the same gossip key; the RPC layer
    /// derives its own keys from the same secret under other context strings.
    pub fn derive(cluster_key: &[u8]) -> Self {
        Self(blake3::derive_key(GOSSIP_KEY_CONTEXT, cluster_key))
    }

    /// Wraps 32 raw key bytes, for keys managed outside murmur.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Returns a short public fingerprint (8 hex digits of blake3 of the key), safe to log.
    pub fn fingerprint(&self) -> String {
        let hash = blake3::hash(&self.0);
        hash.to_hex()[..8].to_string()
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GossipKey({})", self.fingerprint())
    }
}

/// The keys a member opens gossip with: a primary that seals, and older or newer keys
/// that still open.
///
/// A `Keyring` is a shared handle: clones see the same keys, so a rotation applied
/// through any clone takes effect in the running membership at once.
///
/// Rotating without any member dropping out takes three steps, each applied on every
/// member before the next: [`add`](Self::add) the new key, [`set_primary`](Self::set_primary)
/// to it, then [`remove`](Self::remove) the old one. A member that was down during the
/// rotation and comes back with only the old key is still heard while the old key is in
/// the others' rings, and replies to it are sealed with the key it used.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<RwLock<Vec<Entry>>>,
}

#[derive(Clone)]
struct Entry {
    key: GossipKey,
    cipher: ChaCha20Poly1305,
}

impl Entry {
    fn new(key: GossipKey) -> Self {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
        Self { key, cipher }
    }
}

/// Errors from keyring changes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    /// The key named is not in the ring.
    #[error("key {fingerprint} is not in the keyring")]
    UnknownKey {
        /// The fingerprint of the key asked for.
        fingerprint: String,
    },
    /// The primary key cannot be removed: make another key primary first.
    #[error("key {fingerprint} is the primary key; make another key primary before removing it")]
    RemovePrimary {
        /// The fingerprint of the primary key.
        fingerprint: String,
    },
}

impl Keyring {
    /// Creates a keyring whose only key, the primary, is `primary`.
    pub fn new(primary: GossipKey) -> Self {
        Self {
            keys: Arc::new(RwLock::new(vec![Entry::new(primary)])),
        }
    }

    /// Creates a keyring holding the key derived from `cluster_key`.
    pub fn from_cluster_key(cluster_key: &[u8]) -> Self {
        Self::new(GossipKey::derive(cluster_key))
    }

    /// Adds a key that opens datagrams; the primary stays as it is. Adding a key twice
    /// changes nothing.
    pub fn add(&self, key: GossipKey) {
        let mut keys = self.write();
        if !keys.iter().any(|entry| entry.key == key) {
            keys.push(Entry::new(key));
        }
    }

    /// Makes `key`, which must already be in the ring, the key that seals.
    ///
    /// # Errors
    ///
    /// [`KeyringError::UnknownKey`] if the key was never added.
    pub fn set_primary(&self, key: &GossipKey) -> Result<(), KeyringError> {
        let mut keys = self.write();
        let position = keys
            .iter()
            .position(|entry| entry.key == *key)
            .ok_or_else(|| KeyringError::UnknownKey {
                fingerprint: key.fingerprint(),
            })?;
        let entry = keys.remove(position);
        keys.insert(0, entry);
        Ok(())
    }

    /// Removes a key that is not the primary.
    ///
    /// # Errors
    ///
    /// [`KeyringError::RemovePrimary`] for the primary key, [`KeyringError::UnknownKey`]
    /// for a key not in the ring.
    pub fn remove(&self, key: &GossipKey) -> Result<(), KeyringError> {
        let mut keys = self.write();
        let fingerprint = key.fingerprint();
        match keys.iter().position(|entry| entry.key == *key) {
            Some(0) => Err(KeyringError::RemovePrimary { fingerprint }),
            Some(position) => {
                keys.remove(position);
                Ok(())
            }
            None => Err(KeyringError::UnknownKey { fingerprint }),
        }
    }

    /// The key that seals outgoing datagrams.
    pub fn primary(&self) -> GossipKey {
        self.read()[0].key.clone()
    }

    /// All keys, the primary first.
    pub fn keys(&self) -> Vec<GossipKey> {
        self.read().iter().map(|entry| entry.key.clone()).collect()
    }

    /// Whether `key` is in the ring.
    pub fn contains(&self, key: &GossipKey) -> bool {
        self.read().iter().any(|entry| entry.key == *key)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        // A poisoned lock means a panic while holding it, and no code path panics there;
        // the keys are still consistent, so go on with them.
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Entry>> {
        self.keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys()).finish()
    }
}

/// Reasons a datagram was dropped unopened. Each variant is counted separately in
/// [`GossipStats`](crate::GossipStats).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Shorter than the header, or than header, nonce and tag when sealed.
    #[error("datagram of {len} bytes is too short to be a murmur gossip datagram")]
    Truncated {
        /// The datagram's length in bytes.
        len: usize,
    },
    /// Longer than the configured maximum datagram size.
    #[error("datagram of {len} bytes exceeds the {limit}-byte limit")]
    Oversized {
        /// The datagram's length in bytes.
        len: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The first byte is not murmur's format byte, or unknown flags are set.
    #[error("datagram starts with {first:#04x} {flags:#04x}, which is not a murmur gossip header")]
    NotMurmur {
        /// The first byte.
        first: u8,
        /// The flags byte.
        flags: u8,
    },
    /// An open-mode datagram reached a member that has a cluster key.
    #[error("unsealed datagram rejected: this member requires the cluster key")]
    Unsealed,
    /// A sealed datagram reached a member in open mode, which has no key to open it.
    #[error("sealed datagram rejected: this member runs in open mode, without a cluster key")]
    SealedInOpenMode,
    /// No key in the ring opens the datagram: another key, another cluster name, or
    /// bytes changed on the way.
    #[error("no key in the keyring opens the datagram (another cluster key or cluster name)")]
    NoKeyOpens,
    /// The compressed body does not decompress within the size limit.
    #[error("compressed body does not decompress to at most {limit} bytes: {reason}")]
    BadCompression {
        /// The decompressed size limit in bytes.
        limit: usize,
        /// The error zstd returned.
        reason: String,
    },
}

/// Errors from sealing a body.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SealError {
    /// The sealed datagram would exceed the maximum datagram size, even compressed.
    #[error("sealed datagram of {len} bytes exceeds the {limit}-byte limit")]
    Oversized {
        /// The length it would have, in bytes.
        len: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
}

/// Seals and opens gossip datagrams for one cluster.
#[derive(Clone, Debug)]
pub struct Seal {
    keyring: Option<Keyring>,
    cluster_name: String,
    max_datagram: usize,
}

impl Seal {
    /// Creates a seal. `keyring` of `None` is open mode: datagrams travel in clear.
    /// `max_datagram` bounds both what is sent and what is accepted, in bytes.
    pub fn new(keyring: Option<Keyring>, cluster_name: &str, max_datagram: usize) -> Self {
        Self {
            keyring,
            cluster_name: cluster_name.to_string(),
            max_datagram,
        }
    }

    /// The keyring, or `None` in open mode.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    /// Seals `body` into `out` (cleared first) with `key` if it is still in the ring, else
    /// with the primary key. In open mode the body is framed but not encrypted.
    ///
    /// # Errors
    ///
    /// [`SealError::Oversized`] when the result would exceed the maximum datagram size.
    pub fn seal(
        &self,
        body: &[u8],
        key: Option<&GossipKey>,
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        out.clear();
        let compressed = compress(body);
        let (flags, body) = match &compressed {
            Some(smaller) => (FLAG_COMPRESSED, smaller.as_slice()),
            None => (0, body),
        };

        match &self.keyring {
            None => {
                out.extend_from_slice(&[FORMAT, flags]);
                out.extend_from_slice(body);
            }
            Some(keyring) => {
                let header = [FORMAT, flags | FLAG_SEALED];
                let mut nonce = [0u8; NONCE_LEN];
                rand::rng().fill_bytes(&mut nonce);
                let keys = keyring.read();
                let entry = key
                    .and_then(|wanted| keys.iter().find(|entry| entry.key == *wanted))
                    .unwrap_or(&keys[0]);
                let aad = self.associated_data(header);
                let ciphertext = entry
                    .cipher
                    .encrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: body,
                            aad: &aad,
                        },
                    )
                    // ChaCha20-Poly1305 fails only for bodies over 256 GiB, far above any
                    // datagram; report it as oversized all the same.
                    .map_err(|_| SealError::Oversized {
                        len: body.len(),
                        limit: self.max_datagram,
                    })?;
                out.extend_from_slice(&header);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ciphertext);
            }
        }

        if out.len() > self.max_datagram {
            return Err(SealError::Oversized {
                len: out.len(),
                limit: self.max_datagram,
            });
        }
        Ok(())
    }

    /// Opens `datagram` into `out` (cleared first) and returns the key that opened it,
    /// `None` in open mode. Nothing in the datagram is parsed before it has opened.
    ///
    /// # Errors
    ///
    /// An [`OpenError`] saying why the datagram was dropped.
    pub fn open(&self, datagram: &[u8], out: &mut Vec<u8>) -> Result<Option<GossipKey>, OpenError> {
        out.clear();
        if datagram.len() > self.max_datagram {
            return Err(OpenError::Oversized {
                len: datagram.len(),
                limit: self.max_datagram,
            });
        }
        let [first, flags, rest @ ..] = datagram else {
            return Err(OpenError::Truncated {
                len: datagram.len(),
            });
        };
        if *first != FORMAT || flags & !KNOWN_FLAGS != 0 {
            return Err(OpenError::NotMurmur {
                first: *first,
                flags: *flags,
            });
        }
        let sealed = flags & FLAG_SEALED != 0;
        let compressed = flags & FLAG_COMPRESSED != 0;

        let opened_with = match (&self.keyring, sealed) {
            (None, false) => {
                out.extend_from_slice(rest);
                None
            }
            (None, true) => return Err(OpenError::SealedInOpenMode),
            (Some(_), false) => return Err(OpenError::Unsealed),
            (Some(keyring), true) => Some(self.decrypt(keyring, [*first, *flags], rest, out)?),
        };

        if compressed {
            // The body is one chitchat message, which chitchat sizes to fit one UDP
            // datagram whatever this seal's wire limit.
            let plain = zstd::bulk::decompress(out, MAX_UDP_PAYLOAD).map_err(|error| {
                OpenError::BadCompression {
                    limit: MAX_UDP_PAYLOAD,
                    reason: error.to_string(),
                }
            })?;
            *out = plain;
        }
        Ok(opened_with)
    }

    fn decrypt(
        &self,
        keyring: &Keyring,
        header: [u8; HEADER_LEN],
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<GossipKey, OpenError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Truncated {
                len: sealed.len() + HEADER_LEN,
            });
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let aad = self.associated_data(header);
        for entry in keyring.read().iter() {
            let payload = Payload {
                msg: ciphertext,
                aad: &aad,
            };
            if let Ok(plain) = entry.cipher.decrypt(Nonce::from_slice(nonce), payload) {
                *out = plain;
                return Ok(entry.key.clone());
            }
        }
        Err(OpenError::NoKeyOpens)
    }

    fn associated_data(&self, header: [u8; HEADER_LEN]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(HEADER_LEN + self.cluster_name.len());
        aad.extend_from_slice(&header);
        aad.extend_from_slice(self.cluster_name.as_bytes());
        aad
    }
}

/// Compresses `body` when that makes it smaller.
fn compress(body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < COMPRESS_FROM {
        return None;
    }
    let compressed = zstd::bulk::compress(body, ZSTD_LEVEL).ok()?;
    (compressed.len() < body.len()).then_some(compressed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_seal(cluster_key: &[u8]) -> Seal {
        Seal::new(
            Some(Keyring::from_cluster_key(cluster_key)),
            "test",
            MAX_UDP_PAYLOAD,
        )
    }

    fn roundtrip(seal: &Seal, body: &[u8]) -> Vec<u8> {
        let mut datagram = Vec::new();
        seal.seal(body, None, &mut datagram).unwrap();
        let mut opened = Vec::new();
        seal.open(&datagram, &mut opened).unwrap();
        opened
    }

    #[test]
    fn sealed_roundtrip_hides_the_body() {
        let seal = sealed_seal(b"secret");
        let body = b"syn from node-a in cluster test".repeat(3);
        let mut datagram = Vec::new();
        seal.seal(&body, None, &mut datagram).unwrap();
        assert!(!datagram.windows(6).any(|window| window == b"node-a"));
        assert_eq!(roundtrip(&seal, &body), body);
    }

    #[test]
    fn large_bodies_are_compressed() {
        let seal = sealed_seal(b"secret");
        let body = b"svc:orders={\"v\":\"1.0.0\"}".repeat(400);
        let mut datagram = Vec::new();
        seal.seal(&body, None, &mut datagram).unwrap();
        assert!(datagram.len() < body.len() / 4);
        assert_eq!(datagram[1] & FLAG_COMPRESSED, FLAG_COMPRESSED);
        assert_eq!(roundtrip(&seal, &body), body);
    }

    #[test]
    fn open_mode_roundtrip() {
        let seal = Seal::new(None, "test", MAX_UDP_PAYLOAD);
        assert_eq!(roundtrip(&seal, b"hello"), b"hello");
    }

    #[test]
    fn other_key_does_not_open() {
        let mut datagram = Vec::new();
        sealed_seal(b"one")
            .seal(b"body", None, &mut datagram)
            .unwrap();
        let error = sealed_seal(b"two").open(&datagram, &mut Vec::new());
        assert_eq!(error, Err(OpenError::NoKeyOpens));
    }

    #[test]
    fn other_cluster_name_does_not_open() {
        let keyring = Keyring::from_cluster_key(b"shared");
        let ours = Seal::new(Some(keyring.clone()), "ours", MAX_UDP_PAYLOAD);
        let theirs = Seal::new(Some(keyring), "theirs", MAX_UDP_PAYLOAD);
        let mut datagram = Vec::new();
        theirs.seal(b"body", None, &mut datagram).unwrap();
        assert_eq!(
            ours.open(&datagram, &mut Vec::new()),
            Err(OpenError::NoKeyOpens)
        );
    }

    #[test]
    fn flipped_bit_does_not_open() {
        let seal = sealed_seal(b"secret");
        let mut datagram = Vec::new();
        seal.seal(b"body", None, &mut datagram).unwrap();
        for index in 0..datagram.len() {
            let mut changed = datagram.clone();
            changed[index] ^= 0x01;
            assert!(
                seal.open(&changed, &mut Vec::new()).is_err(),
                "byte {index}"
            );
        }
    }

    #[test]
    fn bad_datagrams_name_the_reason() {
        let seal = sealed_seal(b"secret");
        let open = Seal::new(None, "test", MAX_UDP_PAYLOAD);
        let mut out = Vec::new();
        assert_eq!(
            seal.open(&[], &mut out),
            Err(OpenError::Truncated { len: 0 })
        );
        assert_eq!(
            seal.open(&[FORMAT, FLAG_SEALED, 1, 2, 3], &mut out),
            Err(OpenError::Truncated { len: 5 })
        );
        assert_eq!(
            seal.open(b"GET / HTTP/1.1", &mut out),
            Err(OpenError::NotMurmur {
                first: b'G',
                flags: b'E'
            })
        );
        assert_eq!(
            seal.open(&[FORMAT, 0x80, 0], &mut out),
            Err(OpenError::NotMurmur {
                first: FORMAT,
                flags: 0x80
            })
        );
        assert_eq!(
            seal.open(&[FORMAT, 0, 1, 2], &mut out),
            Err(OpenError::Unsealed)
        );
        let mut sealed = Vec::new();
        seal.seal(b"body", None, &mut sealed).unwrap();
        assert_eq!(
            open.open(&sealed, &mut out),
            Err(OpenError::SealedInOpenMode)
        );
        let small = Seal::new(None, "test", 10);
        assert_eq!(
            small.open(&[FORMAT; 11], &mut out),
            Err(OpenError::Oversized { len: 11, limit: 10 })
        );
        assert!(matches!(
            open.open(&[FORMAT, FLAG_COMPRESSED, 1, 2, 3, 4], &mut out),
            Err(OpenError::BadCompression { .. })
        ));
    }

    #[test]
    fn compression_bomb_is_rejected() {
        let open = Seal::new(None, "test", 1_000);
        let bomb = zstd::bulk::compress(&vec![0u8; 100_000], 1).unwrap();
        let mut datagram = vec![FORMAT, FLAG_COMPRESSED];
        datagram.extend_from_slice(&bomb);
        assert!(matches!(
            open.open(&datagram, &mut Vec::new()),
            Err(OpenError::BadCompression {
                limit: MAX_UDP_PAYLOAD,
                ..
            })
        ));
    }

    #[test]
    fn small_wire_limit_still_opens_large_compressed_bodies() {
        let seal = Seal::new(Some(Keyring::from_cluster_key(b"k")), "test", 2_000);
        let body = b"svc:orders={\"v\":\"1.0.0\"}".repeat(200);
        assert!(body.len() > 2_000);
        let mut datagram = Vec::new();
        seal.seal(&body, None, &mut datagram).unwrap();
        let mut opened = Vec::new();
        seal.open(&datagram, &mut opened).unwrap();
        assert_eq!(opened, body);
    }

    #[test]
    fn oversized_body_is_refused_when_sealing() {
        let seal = Seal::new(Some(Keyring::from_cluster_key(b"k")), "test", 100);
        let body: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
        let error = seal.seal(&body, None, &mut Vec::new());
        assert!(matches!(
            error,
            Err(SealError::Oversized { limit: 100, .. })
        ));
    }

    #[test]
    fn keyring_rotation_keeps_old_datagrams_opening() {
        let old = GossipKey::derive(b"old");
        let new = GossipKey::derive(b"new");
        let ring = Keyring::new(old.clone());
        let seal = Seal::new(Some(ring.clone()), "test", MAX_UDP_PAYLOAD);
        let stale = Seal::new(Some(Keyring::new(old.clone())), "test", MAX_UDP_PAYLOAD);

        ring.add(new.clone());
        ring.set_primary(&new).unwrap();
        assert_eq!(ring.primary(), new);

        let mut from_stale = Vec::new();
        stale.seal(b"hello", None, &mut from_stale).unwrap();
        let opened_with = seal.open(&from_stale, &mut Vec::new()).unwrap();
        assert_eq!(opened_with, Some(old.clone()));

        let mut reply = Vec::new();
        seal.seal(b"reply", opened_with.as_ref(), &mut reply)
            .unwrap();
        assert_eq!(
            stale.open(&reply, &mut Vec::new()).unwrap(),
            Some(old.clone())
        );

        assert_eq!(
            ring.remove(&new),
            Err(KeyringError::RemovePrimary {
                fingerprint: new.fingerprint()
            })
        );
        ring.remove(&old).unwrap();
        assert_eq!(
            seal.open(&from_stale, &mut Vec::new()),
            Err(OpenError::NoKeyOpens)
        );
    }

    #[test]
    fn set_primary_of_unknown_key_fails() {
        let ring = Keyring::from_cluster_key(b"a");
        let other = GossipKey::derive(b"b");
        assert!(matches!(
            ring.set_primary(&other),
            Err(KeyringError::UnknownKey { .. })
        ));
    }

    /// Random and mutated datagrams never panic the opener, and only an unchanged sealed
    /// datagram opens. The `open_datagram` fuzz target explores the same input space
    /// with coverage guidance.
    #[test]
    fn random_and_mutated_datagrams_never_open() {
        use rand::rngs::StdRng;
        use rand::{RngExt, SeedableRng};

        let seal = sealed_seal(b"secret");
        let open = Seal::new(None, "test", MAX_UDP_PAYLOAD);
        let mut valid = Vec::new();
        seal.seal(
            &b"a body long enough to be compressed ".repeat(20),
            None,
            &mut valid,
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(2026);
        let mut out = Vec::new();
        for round in 0..20_000 {
            let datagram: Vec<u8> = if round % 2 == 0 {
                let len = rng.random_range(0..200);
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut mutated = valid.clone();
                let index = rng.random_range(0..mutated.len());
                mutated[index] ^= rng.random_range(1..=255u8);
                mutated.truncate(rng.random_range(index..=mutated.len()).max(1));
                mutated
            };
            assert!(seal.open(&datagram, &mut out).is_err(), "round {round}");
            let _ = open.open(&datagram, &mut out);
            assert!(out.len() <= MAX_UDP_PAYLOAD);
        }
    }

    #[test]
    fn debug_shows_fingerprint_only() {
        let key = GossipKey::from_bytes([7; 32]);
        let shown = format!("{key:?}");
        assert!(shown.starts_with("GossipKey("));
        assert!(!shown.contains("7, 7"));
    }
}

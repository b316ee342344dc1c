//! The trust model of a node: a cluster certificate authority, or anyone in development
//! mode.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, PublicKeyData,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use thiserror::Error;

use crate::identity::Identity;

/// The shortest cluster key accepted, in bytes: 128 bits.
pub const MIN_CLUSTER_KEY_LEN: usize = 16;

/// The blake3 `derive_key` context that turns a cluster key into the CA's Ed25519 seed.
const CA_SEED_CONTEXT: &str = "murmur rpc cluster ca seed v1";

/// The DER prefix of an Ed25519 private key in PKCS#8 v1 form (RFC 8410): version 0, the
/// algorithm identifier 1.3.101.112, and an OCTET STRING that wraps the 32-byte seed.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The peers a node accepts and the certificate authority that signs its own certificate.
///
/// With a CA, every node certificate is signed by it and each side requires the other's
/// certificate to chain to it. In open development mode every node signs its own certificate
/// and any peer is accepted. Callers still check that the server's key matches the node id
/// they expected. Cloning is cheap.
#[derive(Clone)]
pub struct Trust {
    inner: Arc<TrustKind>,
}

enum TrustKind {
    Authority(Box<Authority>),
    OpenDev,
}

struct Authority {
    certificate: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    derived: bool,
}

/// The error returned when the cluster's trust cannot be set up or a node certificate issued.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The cluster key is too short to keep the cluster closed.
    #[error("cluster key of {len} bytes is shorter than the {min}-byte minimum")]
    ClusterKeyTooShort {
        /// The key's length.
        len: usize,
        /// The shortest accepted length.
        min: usize,
    },
    /// A CA file could not be read.
    #[error("failed to read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The CA certificate or key is not valid PEM, or the two do not belong together.
    #[error("invalid certificate authority: {0}")]
    InvalidAuthority(String),
    /// A certificate could not be generated or signed.
    #[error("failed to issue a certificate: {0}")]
    Issue(String),
}

impl Trust {
    /// Derives the cluster CA from the cluster key, so every member that has the key gets
    /// the same CA with no files to distribute.
    ///
    /// The CA's Ed25519 seed is `blake3::derive_key("murmur rpc cluster ca seed v1", key)`.
    ///
    /// # Errors
    ///
    /// [`TrustError::ClusterKeyTooShort`] for keys under 16 bytes, and [`TrustError::Issue`]
    /// if the CA certificate cannot be built.
    pub fn derived(cluster_key: &[u8]) -> Result<Trust, TrustError> {
        if cluster_key.len() < MIN_CLUSTER_KEY_LEN {
            return Err(TrustError::ClusterKeyTooShort {
                len: cluster_key.len(),
                min: MIN_CLUSTER_KEY_LEN,
            });
        }

        let seed = blake3::derive_key(CA_SEED_CONTEXT, cluster_key);
        let mut pkcs8 = ED25519_PKCS8_V1_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(&pkcs8[..]),
            &PKCS_ED25519,
        )
        .map_err(issue_error)?;

        let params = derived_ca_params();
        let certificate = params.self_signed(&key_pair).map_err(issue_error)?;
        Ok(Trust::authority(Authority {
            certificate: certificate.der().clone(),
            issuer: Issuer::new(params, key_pair),
            derived: true,
        }))
    }

    /// Uses the operator's CA, given as a PEM certificate and a PEM PKCS#8 private key.
    ///
    /// Every node needs both, because each node signs its own certificate at start.
    ///
    /// # Errors
    ///
    /// [`TrustError::InvalidAuthority`] when either text is not valid PEM, or the key does
    /// not belong to the certificate.
    pub fn from_pem(ca_certificate_pem: &str, ca_key_pem: &str) -> Result<Trust, TrustError> {
        let invalid = |error: rcgen::Error| TrustError::InvalidAuthority(error.to_string());
        let key_pair = KeyPair::from_pem(ca_key_pem).map_err(invalid)?;
        let certificate = first_pem_certificate(ca_certificate_pem)?;

        let spki = rustls::server::ParsedCertificate::try_from(&certificate)
            .map_err(|error| TrustError::InvalidAuthority(error.to_string()))?
            .subject_public_key_info();
        if spki.as_ref() != key_pair.subject_public_key_info().as_slice() {
            return Err(TrustError::InvalidAuthority(
                "the private key does not belong to the certificate".to_string(),
            ));
        }

        let issuer = Issuer::from_ca_cert_der(&certificate, key_pair).map_err(invalid)?;
        Ok(Trust::authority(Authority {
            certificate,
            issuer,
            derived: false,
        }))
    }

    /// Reads the operator's CA certificate and key from PEM files, as
    /// [`from_pem`](Self::from_pem) does.
    ///
    /// # Errors
    ///
    /// [`TrustError::Io`] when a file cannot be read, and the errors of `from_pem`.
    pub fn from_pem_files(
        ca_certificate: impl AsRef<Path>,
        ca_key: impl AsRef<Path>,
    ) -> Result<Trust, TrustError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| TrustError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        Trust::from_pem(&read(ca_certificate.as_ref())?, &read(ca_key.as_ref())?)
    }

    /// Accepts any peer: the open development mode for a cluster without a cluster key.
    ///
    /// Connections still use TLS, and callers still check that the server's key matches the
    /// node id they expected, but anyone who can reach the port can call every method.
    pub fn open_dev() -> Trust {
        Trust {
            inner: Arc::new(TrustKind::OpenDev),
        }
    }

    /// Returns whether this is the open development mode.
    pub fn is_open(&self) -> bool {
        matches!(*self.inner, TrustKind::OpenDev)
    }

    /// Returns the CA certificate, or `None` in open development mode.
    pub fn ca_certificate(&self) -> Option<&CertificateDer<'static>> {
        match &*self.inner {
            TrustKind::Authority(authority) => Some(&authority.certificate),
            TrustKind::OpenDev => None,
        }
    }

    /// Issues the certificate a node presents: its node id as DNS name, signed by the CA, or
    /// by the node itself in open development mode.
    pub(crate) fn issue(&self, identity: &Identity) -> Result<CertificateDer<'static>, TrustError> {
        let node_key = identity.key_pair().map_err(issue_error)?;
        let params = node_params(identity)?;
        let certificate = match &*self.inner {
            TrustKind::OpenDev => params.self_signed(&node_key),
            TrustKind::Authority(authority) => params.signed_by(&node_key, &authority.issuer),
        }
        .map_err(issue_error)?;
        Ok(certificate.der().clone())
    }

    fn authority(authority: Authority) -> Trust {
        Trust {
            inner: Arc::new(TrustKind::Authority(Box::new(authority))),
        }
    }
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            TrustKind::OpenDev => f.write_str("Trust::OpenDev"),
            TrustKind::Authority(authority) if authority.derived => f.write_str("Trust::Derived"),
            TrustKind::Authority(_) => f.write_str("Trust::Operator"),
        }
    }
}

fn derived_ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "murmur cluster CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn node_params(identity: &Identity) -> Result<CertificateParams, TrustError> {
    let node_id = identity.node_id().to_string();
    let mut params = CertificateParams::new(vec![node_id.clone()]).map_err(issue_error)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, node_id);
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

fn first_pem_certificate(pem: &str) -> Result<CertificateDer<'static>, TrustError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| TrustError::InvalidAuthority("no certificate in the PEM text".to_string()))?
        .map_err(|error| TrustError::InvalidAuthority(error.to_string()))
}

fn issue_error(error: rcgen::Error) -> TrustError {
    TrustError::Issue(error.to_string())
}

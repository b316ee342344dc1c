//! TLS 1.3 configuration for QUIC: certificates, and the checks each side makes of the other.
//!
//! The caller puts the node id it expects in the TLS server name. Its verifier accepts the
//! server only if the certificate's Ed25519 key hashes to that node id and, unless the
//! cluster is in open development mode, the certificate chains to the cluster CA. The
//! server requires a client certificate with an Ed25519 key that, again unless the mode is
//! open, chains to the cluster CA; the key's hash is the caller's node id.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};
use thiserror::Error;

use crate::identity::{Identity, NodeId};
use crate::trust::{Trust, TrustError};

/// The ALPN protocol name of murmur's calls, version 1.
pub(crate) const ALPN: &[u8] = b"murmur/1";

/// The rustls configurations of one endpoint.
pub(crate) struct TlsConfigs {
    pub(crate) server: rustls::ServerConfig,
    pub(crate) client: rustls::ClientConfig,
}

/// The reasons for rejecting a peer's certificate beyond those rustls itself reports.
#[derive(Debug, Error)]
pub(crate) enum PeerCertificateError {
    #[error("certificate belongs to node {actual}, expected node {expected}")]
    WrongNode { expected: NodeId, actual: NodeId },
    #[error("certificate key is not ed25519, so it names no node id")]
    NotEd25519,
    #[error("server name {0:?} is not a node id")]
    ServerNameNotNodeId(String),
}

/// Builds the server and client configurations for `identity` under `trust`.
pub(crate) fn configs(identity: &Identity, trust: &Trust) -> Result<TlsConfigs, TrustError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![trust.issue(identity)?];
    let roots = trust
        .ca_certificate()
        .map(root_store)
        .transpose()?
        .map(Arc::new);
    let algorithms = provider.signature_verification_algorithms;
    let tls_error = |error: Error| TrustError::Issue(error.to_string());

    let client_verifier = Arc::new(ClientVerifier::new(&provider, roots.clone())?);
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), private_key(identity))
        .map_err(tls_error)?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let server_verifier = Arc::new(ServerVerifier { roots, algorithms });
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(server_verifier)
        .with_client_auth_cert(chain, private_key(identity))
        .map_err(tls_error)?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    Ok(TlsConfigs { server, client })
}

/// Returns the node id that a peer's certificate chain names through its key.
pub(crate) fn node_id_of(chain: &[CertificateDer<'_>]) -> Result<NodeId, Error> {
    let end_entity = chain
        .first()
        .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let parsed = ParsedCertificate::try_from(end_entity)?;
    NodeId::from_spki(parsed.subject_public_key_info().as_ref())
        .ok_or_else(|| other_error(PeerCertificateError::NotEd25519))
}

fn root_store(ca: &CertificateDer<'static>) -> Result<RootCertStore, TrustError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|error| TrustError::InvalidAuthority(error.to_string()))?;
    Ok(roots)
}

fn private_key(identity: &Identity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(identity.private_key_der())
}

fn other_error(error: PeerCertificateError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

/// The caller's check of a server: right node id, and a chain to the CA unless open.
#[derive(Debug)]
struct ServerVerifier {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let name = server_name.to_str();
        let expected: NodeId = name.parse().map_err(|_| {
            other_error(PeerCertificateError::ServerNameNotNodeId(name.to_string()))
        })?;
        let actual = node_id_of(std::slice::from_ref(end_entity))?;
        if actual != expected {
            return Err(other_error(PeerCertificateError::WrongNode {
                expected,
                actual,
            }));
        }

        if let Some(roots) = &self.roots {
            let parsed = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
            rustls::client::verify_server_name(&parsed, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // QUIC runs on TLS 1.3 only, and the configurations offer no other version.
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server's check of a caller: an Ed25519 key, and a chain to the CA unless open.
#[derive(Debug)]
struct ClientVerifier {
    chain_verifier: Option<Arc<dyn ClientCertVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientVerifier {
    fn new(
        provider: &Arc<CryptoProvider>,
        roots: Option<Arc<RootCertStore>>,
    ) -> Result<ClientVerifier, TrustError> {
        let chain_verifier = match roots {
            Some(roots) => Some(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots,
                    provider.clone(),
                )
                .build()
                .map_err(|error| TrustError::InvalidAuthority(error.to_string()))?,
            ),
            None => None,
        };
        Ok(ClientVerifier {
            chain_verifier,
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.chain_verifier {
            Some(verifier) => verifier.root_hint_subjects(),
            None => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        node_id_of(std::slice::from_ref(end_entity))?;
        match &self.chain_verifier {
            Some(verifier) => verifier.verify_client_cert(end_entity, intermediates, now),
            None => Ok(ClientCertVerified::assertion()),
        }
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

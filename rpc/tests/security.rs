//! Identity and admission over real QUIC: node ids, the cluster CA and open development
//! mode.

mod common;

use common::{CLUSTER_KEY, cluster, init_logs, loopback_v4, node, peer};
use murmur_rpc::{
    CallOptions, Code, Endpoint, Identity, NodeId, Peer, RpcConfig, Status, Trust, TrustError,
};

fn serve_ping(endpoint: &Endpoint) {
    endpoint
        .router()
        .unary("health", "ping", |_ctx, (): ()| async move {
            Ok::<_, Status>("pong".to_string())
        });
}

async fn ping(client: &Endpoint, target: Peer) -> Result<String, Status> {
    client
        .call(target, "health", "ping", &(), CallOptions::new())
        .await
}

#[tokio::test]
async fn server_with_another_node_id_is_unauthenticated() {
    init_logs();
    let trust = cluster();
    let server = node(&trust);
    let client = node(&trust);
    serve_ping(&server);

    let impostor = Identity::generate().unwrap().node_id();
    let target = Peer::new(server.local_addr().unwrap(), impostor);
    let status = ping(&client, target).await.unwrap_err();

    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains(&server.node_id().to_string()),
        "message names the node found: {status}"
    );
    assert!(ping(&client, peer(&server)).await.is_ok());
}

#[tokio::test]
async fn caller_from_foreign_ca_is_rejected() {
    init_logs();
    let server = node(&cluster());
    serve_ping(&server);
    let foreign = node(&Trust::derived(b"another cluster's key, 32 bytes!").unwrap());

    let status = ping(&foreign, peer(&server)).await.unwrap_err();

    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    assert_eq!(server.stats().calls_served, 0);
    assert!(common::eventually(|| server.stats().handshakes_rejected >= 1).await);
}

#[tokio::test]
async fn server_from_foreign_ca_is_rejected() {
    init_logs();
    let foreign = node(&Trust::derived(b"another cluster's key, 32 bytes!").unwrap());
    serve_ping(&foreign);
    let client = node(&cluster());

    let status = ping(&client, peer(&foreign)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
}

#[tokio::test]
async fn open_dev_nodes_call_each_other() {
    init_logs();
    let open = Trust::open_dev();
    let server = node(&open);
    let client = node(&open);
    serve_ping(&server);

    assert_eq!(ping(&client, peer(&server)).await.unwrap(), "pong");
}

#[tokio::test]
async fn open_dev_caller_still_checks_node_id() {
    init_logs();
    let open = Trust::open_dev();
    let server = node(&open);
    let client = node(&open);
    serve_ping(&server);

    let target = Peer::new(server.local_addr().unwrap(), NodeId::from_bytes([3; 32]));
    let status = ping(&client, target).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn open_dev_caller_is_rejected_by_cluster() {
    init_logs();
    let server = node(&cluster());
    serve_ping(&server);
    let open = node(&Trust::open_dev());

    let status = ping(&open, peer(&server)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
}

#[tokio::test]
async fn operator_ca_from_pem_admits_its_nodes() {
    init_logs();
    let (certificate_pem, key_pem) = operator_ca("Example Corp murmur CA");
    let trust = Trust::from_pem(&certificate_pem, &key_pem).unwrap();
    let server = node(&trust);
    let client = node(&trust);
    serve_ping(&server);

    assert_eq!(ping(&client, peer(&server)).await.unwrap(), "pong");

    let derived_client = node(&Trust::derived(CLUSTER_KEY).unwrap());
    let status = ping(&derived_client, peer(&server)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn operator_ca_files_are_read() {
    let (certificate_pem, key_pem) = operator_ca("Files CA");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), certificate_pem).unwrap();
    std::fs::write(dir.path().join("ca.key"), key_pem).unwrap();

    let trust = Trust::from_pem_files(dir.path().join("ca.pem"), dir.path().join("ca.key"));
    assert!(trust.unwrap().ca_certificate().is_some());

    let missing = Trust::from_pem_files(dir.path().join("nope.pem"), dir.path().join("ca.key"));
    assert!(matches!(missing, Err(TrustError::Io { .. })));
}

#[test]
fn operator_ca_with_mismatched_key_is_invalid() {
    let (certificate_pem, _) = operator_ca("One CA");
    let (_, other_key_pem) = operator_ca("Another CA");
    let error = Trust::from_pem(&certificate_pem, &other_key_pem).unwrap_err();
    assert!(matches!(error, TrustError::InvalidAuthority(_)), "{error}");
}

#[test]
fn short_cluster_key_is_rejected() {
    let error = Trust::derived(b"short").unwrap_err();
    assert_eq!(
        error.to_string(),
        "cluster key of 5 bytes is shorter than the 16-byte minimum"
    );
}

#[test]
fn derived_ca_is_the_same_on_every_node() {
    let first = Trust::derived(CLUSTER_KEY).unwrap();
    let second = Trust::derived(CLUSTER_KEY).unwrap();
    let first_key = public_key_of(first.ca_certificate().unwrap());
    let second_key = public_key_of(second.ca_certificate().unwrap());
    assert_eq!(first_key, second_key);
}

#[tokio::test]
async fn bind_outside_runtime_is_an_error() {
    let result = std::thread::spawn(|| {
        Endpoint::bind(
            loopback_v4(),
            &Identity::generate().unwrap(),
            &cluster(),
            RpcConfig::default(),
        )
        .map(|_| ())
    })
    .join()
    .unwrap();
    assert!(matches!(result, Err(murmur_rpc::BindError::NoRuntime)));
}

fn public_key_of(certificate: &rustls::pki_types::CertificateDer<'_>) -> Vec<u8> {
    rustls::server::ParsedCertificate::try_from(certificate)
        .unwrap()
        .subject_public_key_info()
        .as_ref()
        .to_vec()
}

/// Makes an ECDSA P-256 CA the way an operator might, with a distinguished name that has
/// more than a common name.
fn operator_ca(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example Corp");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let certificate = params.self_signed(&key).unwrap();
    (certificate.pem(), key.serialize_pem())
}

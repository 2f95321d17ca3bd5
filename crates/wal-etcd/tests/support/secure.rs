//! etcd containers with authentication (user/password, simple tokens) and,
//! for the TLS tests, server and client certificates.
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use wal_etcd::{
    etcd_client::{self, Client, ConnectOptions},
    EtcdTls,
};

use tokio::sync::OnceCell;

use super::{start_node, wait_ready, wait_ready_with, EtcdNode, NodeSpec, ServerTls};

/// The root user's password on the auth containers.
pub const ROOT_PASSWORD: &str = "root-pw-7f3c9e";

/// A port free right now on 127.0.0.1, for a container that must keep its
/// host port across `docker restart`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A single etcd node on a fixed host port with simple tokens that expire
/// after `token_ttl_secs` of disuse, and auth enabled with user `root`.
pub async fn start_auth_node(tag: &str, token_ttl_secs: u32) -> EtcdNode {
    let node = start_node(NodeSpec {
        name: super::unique(tag),
        initial_cluster: None,
        host_port: Some(free_port()),
        args: vec![
            "--auth-token=simple".into(),
            format!("--auth-token-ttl={token_ttl_secs}"),
        ],
        tls: None,
    })
    .await;
    let eps = vec![node.endpoint.clone()];
    wait_ready(&eps, Duration::from_secs(60)).await;
    let mut c = Client::connect(&eps, None).await.unwrap();
    c.user_add("root", ROOT_PASSWORD, None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.auth_enable().await.unwrap();
    node
}

/// A client authenticated as root (without token refresh).
pub async fn root_client(endpoints: &[String]) -> Result<Client, etcd_client::Error> {
    Client::connect(
        endpoints,
        Some(ConnectOptions::new().with_user("root", ROOT_PASSWORD)),
    )
    .await
}

/// Whether `e` is etcd's answer to an expired or unknown token.
pub fn is_invalid_token(e: &etcd_client::Error) -> bool {
    e.to_string().contains("invalid auth token")
}

/// Waits until a token issued now has expired on the server, proving that
/// every token last used before this call has expired too (the server
/// forgets a simple token `--auth-token-ttl` after its last use). A fresh
/// probe client per attempt, used once after a growing pause, so probing
/// does not keep its own token alive.
pub async fn wait_tokens_expired(endpoints: &[String], ttl: Duration, within: Duration) {
    let deadline = Instant::now() + within;
    let mut pause = ttl + Duration::from_millis(1500);
    loop {
        let mut probe = root_client(endpoints).await.unwrap();
        tokio::time::sleep(pause).await;
        match probe.get("wal-test-probe", None).await {
            Err(e) if is_invalid_token(&e) => return,
            Err(e) => panic!("token probe: unexpected error {e}"),
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "a token was still valid {pause:?} after its last use: not expired within {within:?}"
                );
                pause += ttl;
            }
        }
    }
}

/// Waits until etcd answers an authenticated read.
pub async fn wait_auth_ready(endpoints: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "etcd at {endpoints:?} not ready within {within:?}: {last}"
        );
        let attempt = async {
            let mut c = root_client(endpoints).await?;
            c.get("wal-test-ready", None).await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timeout".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Certificates made for one test: a CA, a server certificate for
/// `127.0.0.1` and `localhost`, and a client certificate, both signed by
/// the CA. PEM throughout.
pub struct TestPki {
    /// The CA certificate (clients trust it; the server trusts the client
    /// certificates it signed).
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

/// The paths of a [`TestPki`]'s client files, for `walctl --cacert/--cert/--key`.
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// A self-signed CA that signed nothing else: the "wrong CA" of the tests.
pub fn unrelated_ca_pem() -> String {
    let key = KeyPair::generate().unwrap();
    ca_params("an unrelated CA")
        .self_signed(&key)
        .unwrap()
        .pem()
}

impl TestPki {
    pub fn generate() -> TestPki {
        let ca = CertifiedIssuer::self_signed(
            ca_params("wal-etcd test CA"),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        let leaf = |sans: Vec<String>, cn: &str, ekus: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = ekus;
            let cert = p.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        // etcd also presents the server certificate as a client (its
        // gateway dials itself), so it carries both usages.
        let (server_cert_pem, server_key_pem) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "etcd",
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client_cert_pem, client_key_pem) = leaf(
            Vec::new(),
            "wal-client",
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        TestPki {
            ca_pem: ca.pem(),
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
        }
    }

    /// The server side, demanding client certificates or not.
    pub fn server_tls(&self, client_cert_auth: bool) -> ServerTls {
        ServerTls {
            cert_pem: self.server_cert_pem.clone(),
            key_pem: self.server_key_pem.clone(),
            client_ca_pem: self.ca_pem.clone(),
            client_cert_auth,
        }
    }

    /// A client that trusts the CA and presents the client certificate.
    pub fn client_tls(&self) -> EtcdTls {
        self.ca_only_tls()
            .identity_pem(self.client_cert_pem.clone(), self.client_key_pem.clone())
    }

    /// A client that trusts the CA but has no certificate of its own.
    pub fn ca_only_tls(&self) -> EtcdTls {
        EtcdTls::new().ca_pem(self.ca_pem.clone())
    }

    /// Writes the client's files (CA, certificate, key) into `dir`.
    pub fn write_client_files(&self, dir: &Path) -> ClientFiles {
        let files = ClientFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("client.crt"),
            key: dir.join("client.key"),
        };
        std::fs::write(&files.ca, &self.ca_pem).unwrap();
        std::fs::write(&files.cert, &self.client_cert_pem).unwrap();
        std::fs::write(&files.key, &self.client_key_pem).unwrap();
        files
    }
}

/// A single etcd node serving `https://` with `pki`'s server certificate
/// and `--client-cert-auth`, ready (a client with `pki`'s client
/// certificate reads from it) when this returns.
pub async fn start_tls_node(tag: &str, pki: &TestPki) -> EtcdNode {
    let node = start_node(NodeSpec {
        tls: Some(pki.server_tls(true)),
        ..NodeSpec::single(&super::unique(tag))
    })
    .await;
    assert!(
        node.endpoint.starts_with("https://127.0.0.1:"),
        "{}",
        node.endpoint
    );
    wait_ready_with(
        std::slice::from_ref(&node.endpoint),
        Some(ConnectOptions::new().with_tls(pki.client_tls().tls_options())),
        Duration::from_secs(60),
    )
    .await;
    node
}

static SHARED_TLS: OnceCell<(TestPki, EtcdNode)> = OnceCell::const_new();

/// The `--client-cert-auth` node shared by the TLS tests of this binary
/// (started once, removed when the process exits), and its certificates.
pub async fn shared_tls_node() -> (&'static TestPki, String) {
    let (pki, node) = SHARED_TLS
        .get_or_init(|| async {
            let pki = TestPki::generate();
            let node = start_tls_node("wal-etcd-tls", &pki).await;
            super::reap_on_exit(node.id());
            (pki, node)
        })
        .await;
    (pki, node.endpoint.clone())
}

//! TLS to etcd: the client's certificates ([`EtcdTls`]), and a handshake
//! check at connect that reports an untrusted server certificate or a
//! refused client certificate as [`Error::Tls`].
//!
//! Why the check: with TLS 1.3 the server verifies the client's certificate
//! only after the client has finished its side of the handshake, so a
//! cluster run with `--client-cert-auth` that refuses this client just
//! closes the connection; etcd-client (tonic, hyper) then reports
//! "operation was canceled" with the server's alert lost. The check does
//! one handshake per endpoint with the same certificates, sends the HTTP/2
//! preface and reads the server's first answer: its alert, if it refuses
//! us, or its HTTP/2 settings if it accepts. It costs one round trip at
//! connect and decides only on a definite TLS answer: an unreachable or
//! slow member is left to the requests, as without TLS.

use std::{fmt, io, sync::Arc, time::Duration};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{
    rustls::{
        self,
        crypto::CryptoProvider,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
        CertificateError, ClientConfig, RootCertStore,
    },
    TlsConnector,
};
use wal_core::Error;

use crate::options::redact_endpoint;

/// TLS settings of an etcd connection: the CA certificates that sign the
/// servers' certificates and, for clusters run with `--client-cert-auth`,
/// this client's certificate and private key. All PEM.
///
/// `Debug` shows how many certificates are set, never the key.
///
/// ```no_run
/// use wal_etcd::{EtcdOptions, EtcdTls};
///
/// # fn main() -> std::io::Result<()> {
/// let tls = EtcdTls::new()
///     .ca_pem(std::fs::read("/etc/etcd/ca.crt")?)
///     .identity_pem(std::fs::read("client.crt")?, std::fs::read("client.key")?);
/// let options = EtcdOptions::new(["https://10.0.0.1:2379"], "orders").tls(tls);
/// assert!(!format!("{options:?}").contains("PRIVATE KEY"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct EtcdTls {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain_name: Option<String>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let certificates = |pem: &[u8]| format!("{} certificate(s)", count_certificates(pem));
        f.debug_struct("EtcdTls")
            .field("ca", &self.ca_pem.as_deref().map(certificates))
            .field(
                "identity",
                &self
                    .identity
                    .as_ref()
                    .map(|(cert, _)| format!("{} and a <redacted> key", certificates(cert))),
            )
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

fn count_certificates(pem: &[u8]) -> usize {
    CertificateDer::pem_slice_iter(pem)
        .filter(Result::is_ok)
        .count()
}

impl EtcdTls {
    /// No CA, no client certificate. A CA is required: this build trusts no
    /// system roots.
    pub fn new() -> EtcdTls {
        EtcdTls::default()
    }

    /// The CA certificate(s) (PEM, one or more) that servers' certificates
    /// must be signed by; the only roots trusted (etcd's `--trusted-ca-file`
    /// is usually the same file). Required.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// This client's certificate (PEM, optionally followed by its chain)
    /// and private key (PEM: PKCS#8, PKCS#1 or SEC1), for clusters that
    /// require client certificates (`--client-cert-auth`). The key is
    /// never printed.
    pub fn identity_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Verify the servers' certificates against this name instead of each
    /// endpoint's host (for endpoints given by an address the certificate
    /// does not name). Default: the endpoint's host, an IP address or a DNS
    /// name.
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    /// These settings as etcd-client's TLS options, for a client of your
    /// own that connects like the store. Careful: etcd-client's options
    /// print the private key in their `Debug`; never format them.
    pub fn tls_options(&self) -> etcd_client::TlsOptions {
        let mut o = etcd_client::TlsOptions::new();
        if let Some(ca) = &self.ca_pem {
            o = o.ca_certificate(etcd_client::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            o = o.identity(etcd_client::Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.domain_name {
            o = o.domain_name(name.clone());
        }
        o
    }

    /// Checks that the PEM parses, so that a wrong file is named at open
    /// rather than surfacing as a failed handshake.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        self.client_config().map(|_| ())
    }

    /// The rustls configuration tonic builds from [`tls_options`](Self::tls_options):
    /// the same roots, client certificate, protocol versions and ALPN.
    fn client_config(&self) -> Result<ClientConfig, Error> {
        let bad = |why: String| Error::InvalidArgument(format!("etcd tls: {why}"));
        let Some(ca) = &self.ca_pem else {
            return Err(bad(
                "no CA certificate: set EtcdTls::ca_pem (walctl --cacert) to the CA that signed \
                 the servers' certificates; this build trusts no system roots"
                    .into(),
            ));
        };
        let ca = parse_certificates(ca).map_err(|e| bad(format!("the CA PEM: {e}")))?;
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots
                .add(cert)
                .map_err(|e| bad(format!("the CA PEM holds an unusable certificate: {e}")))?;
        }
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let cert = parse_certificates(cert)
                    .map_err(|e| bad(format!("the client certificate PEM: {e}")))?;
                // Never the key's bytes in a message: only what is wrong.
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                    bad(format!(
                        "the client key PEM holds no usable private key ({})",
                        pem_error(&e)
                    ))
                })?;
                builder
                    .with_client_auth_cert(cert, key)
                    .map_err(|e| bad(format!("the client certificate and key: {e}")))?
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&e))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certs)
}

/// A PEM parse error, by kind only: some variants quote the input, which
/// for a key file is the key.
fn pem_error(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "a section has no END line",
        E::IllegalSectionStart { .. } => "a malformed BEGIN line",
        E::Base64Decode(_) => "invalid base64",
        E::NoItemsFound => "nothing of the right kind",
        _ => "unreadable PEM",
    }
}

/// What one endpoint's handshake showed.
enum Verdict {
    /// The server completed the handshake and answered over it.
    Accepted,
    /// A definite TLS failure, described.
    Refused(String),
    /// Unreachable, slow, or closed without a TLS answer: not for this
    /// check to judge.
    Inconclusive,
}

/// The HTTP/2 client preface and an empty SETTINGS frame: what gRPC sends
/// first. The server answers with its own SETTINGS, or, if it refused our
/// certificate, its alert.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Fails with [`Error::Tls`] if no endpoint accepts a TLS connection with
/// `tls` within `within` and at least one refused it definitely. Returns
/// as soon as one endpoint accepts.
pub(crate) async fn check_handshake(
    endpoints: &[String],
    tls: &EtcdTls,
    within: Duration,
) -> Result<(), Error> {
    let connector = TlsConnector::from(Arc::new(tls.client_config()?));
    let has_identity = tls.identity.is_some();
    let mut probes: FuturesUnordered<_> = endpoints
        .iter()
        .map(|endpoint| {
            let connector = connector.clone();
            let domain = tls.domain_name.clone();
            async move {
                let verdict = tokio::time::timeout(
                    within,
                    probe(endpoint, connector, domain.as_deref(), has_identity),
                )
                .await
                .unwrap_or(Verdict::Inconclusive);
                (redact_endpoint(endpoint), verdict)
            }
        })
        .collect();
    let mut refused = Vec::new();
    while let Some((endpoint, verdict)) = probes.next().await {
        match verdict {
            Verdict::Accepted => return Ok(()),
            Verdict::Refused(why) => refused.push(format!("{endpoint}: {why}")),
            Verdict::Inconclusive => {}
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Error::Tls(format!(
            "no TLS connection to etcd: {}",
            refused.join("; ")
        )))
    }
}

async fn probe(
    endpoint: &str,
    connector: TlsConnector,
    domain: Option<&str>,
    has_identity: bool,
) -> Verdict {
    // A server that is not TLS on this port hangs up on the ClientHello
    // (etcd's plain listener does). A restart could do that once; twice in
    // a row means it.
    for _ in 0..2 {
        match attempt(endpoint, &connector, domain, has_identity).await {
            Attempt::HandshakeEof => continue,
            Attempt::Done(v) => return v,
        }
    }
    Verdict::Refused(
        "the server hung up on the TLS handshake: it does not serve TLS on this port \
         (is the endpoint http://?)"
            .into(),
    )
}

enum Attempt {
    Done(Verdict),
    /// The connection closed during the handshake, without a TLS answer.
    HandshakeEof,
}

async fn attempt(
    endpoint: &str,
    connector: &TlsConnector,
    domain: Option<&str>,
    has_identity: bool,
) -> Attempt {
    let done = Attempt::Done;
    let Some((host, port)) = host_port(endpoint) else {
        return done(Verdict::Inconclusive);
    };
    let Ok(name) = ServerName::try_from(domain.unwrap_or(host).to_string()) else {
        return done(Verdict::Inconclusive);
    };
    let Ok(tcp) = tokio::net::TcpStream::connect((host, port)).await else {
        return done(Verdict::Inconclusive);
    };
    let judge = |e: io::Error| match rustls_error(&e) {
        Some(e) => Verdict::Refused(describe(e, has_identity)),
        None => Verdict::Inconclusive,
    };
    let mut stream = match connector.connect(name, tcp).await {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Attempt::HandshakeEof,
        Err(e) => return done(judge(e)),
    };
    if let Err(e) = async {
        stream.write_all(H2_PREFACE).await?;
        stream.flush().await
    }
    .await
    {
        return done(judge(e));
    }
    let mut first = [0u8; 1];
    done(match stream.read(&mut first).await {
        Ok(0) => Verdict::Inconclusive,
        Ok(_) => Verdict::Accepted,
        Err(e) => judge(e),
    })
}

/// Host and port of an endpoint URL (`https://host:port/...`, or
/// `host:port`); tonic's default port for `https` is 443.
fn host_port(endpoint: &str) -> Option<(&str, u16)> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 443,
    };
    (!host.is_empty()).then_some((host, port))
}

/// The rustls error inside an I/O error (tokio-rustls wraps it so; its
/// `source()` skips it, hence `get_ref`).
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The rustls error anywhere in an error's source chain.
pub(crate) fn rustls_error_in_chain<'a>(
    mut e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    loop {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = e.downcast_ref::<io::Error>().and_then(rustls_error) {
            return Some(r);
        }
        e = e.source()?;
    }
}

/// Whether `e` happened in the handshake, before any request byte was
/// sent: this client refused the server's certificate.
pub(crate) fn is_certificate_refusal(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(_))
}

/// A TLS failure in plain words, with what to check.
pub(crate) fn describe(e: &rustls::Error, has_identity: bool) -> String {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let why = match c {
                CertificateError::UnknownIssuer => {
                    "it is not signed by the CA given (EtcdTls::ca_pem, walctl --cacert)"
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "it is not issued for the endpoint's host (give the name it is issued for with \
                     EtcdTls::domain_name, or connect by that name)"
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => {
                    "it has expired or is not valid yet (check the certificate and the clocks)"
                }
                _ => "it failed verification",
            };
            format!("the server's certificate is not trusted: {why} ({c:?})")
        }
        rustls::Error::AlertReceived(
            alert @ (A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::AccessDenied
            | A::HandshakeFailure),
        ) => {
            if has_identity {
                format!(
                    "the server refused this client's certificate (alert {alert:?}): it must be \
                     signed by a CA in the server's --trusted-ca-file and valid for client auth"
                )
            } else {
                format!(
                    "the server requires a client certificate (--client-cert-auth) and this client \
                     has none (alert {alert:?}): set EtcdTls::identity_pem (walctl --cert/--key)"
                )
            }
        }
        rustls::Error::InvalidMessage(_) => {
            format!("the server does not answer in TLS (is the endpoint http://?): {e}")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_port_of_endpoints() {
        assert_eq!(
            host_port("https://127.0.0.1:2379"),
            Some(("127.0.0.1", 2379))
        );
        assert_eq!(host_port("127.0.0.1:2379"), Some(("127.0.0.1", 2379)));
        assert_eq!(
            host_port("https://u:p@etcd-0:2379/x"),
            Some(("etcd-0", 2379))
        );
        assert_eq!(host_port("https://[::1]:2379"), Some(("::1", 2379)));
        assert_eq!(host_port("https://etcd"), Some(("etcd", 443)));
        assert_eq!(host_port("https://:2379"), None);
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().pem()
    }

    /// A PEM that does not parse is named at validation, without quoting
    /// the key.
    #[test]
    fn bad_pem_is_named_without_its_bytes() {
        let e = EtcdTls::new().validate().unwrap_err().to_string();
        assert!(e.contains("no CA certificate"), "{e}");
        let e = EtcdTls::new()
            .ca_pem("garbage")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("the CA PEM: no PEM certificate"), "{e}");
        let key = "-----BEGIN PRIVATE KEY-----\nnot*base64*s3cret\n-----END PRIVATE KEY-----\n";
        let tls = EtcdTls::new().ca_pem(ca_pem()).identity_pem(ca_pem(), key);
        let e = tls.validate().unwrap_err().to_string();
        assert!(
            e.contains("client key PEM holds no usable private key"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        assert!(!format!("{tls:?}").contains("s3cret"));
        EtcdTls::new().ca_pem(ca_pem()).validate().unwrap();
    }
}

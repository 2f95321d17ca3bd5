//! TLS end to end against a real etcd serving `https://` with certificates
//! made by the test (a CA, a server certificate for 127.0.0.1 and
//! localhost, client certificates) and `--client-cert-auth`: the store and
//! the reader work over mutual TLS; a wrong CA, a missing client
//! certificate, a client certificate from another CA and TLS to a plain
//! server each fail at once with `Error::Tls` saying what is wrong; no
//! `Debug` output shows key material.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use support::secure::{self, TestPki};
use wal_core::{Entry, Error, Lsn, ReadLimit, RecordKind, Wal, WalOptions};
use wal_etcd::{
    etcd_client::{Client, ConnectOptions},
    EtcdOptions, EtcdReader, EtcdStore, EtcdTls,
};

/// Every failure below must come well inside this (it is the options'
/// connect timeout; a failure reported as a timeout would take longer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn tls_options(endpoint: &str, prefix: &str, tls: EtcdTls) -> EtcdOptions {
    support::options(&[endpoint.to_string()], prefix, "log")
        .tls(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .lease_ttl(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(2))
}

fn prefix(tag: &str) -> String {
    format!("/{}/", support::unique(tag))
}

async fn within<T>(what: &str, d: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {d:?}"))
}

fn texts(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect()
}

/// The base64 body lines of a PEM: what would show if key material leaked.
fn pem_body_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect()
}

fn assert_no_key_material(pki: &TestPki, text: &str) {
    assert!(!text.contains("PRIVATE KEY"), "key PEM in {text}");
    for line in pem_body_lines(&pki.client_key_pem) {
        assert!(!text.contains(line), "client key bytes in {text}");
    }
}

/// Runs `f` and asserts it fails with `Error::Tls` containing `want`,
/// sooner than the connect timeout.
async fn expect_tls_error<T: std::fmt::Debug>(
    what: &str,
    want: &str,
    f: impl std::future::Future<Output = wal_core::Result<T>>,
) -> String {
    let start = Instant::now();
    let r = within(what, CONNECT_TIMEOUT * 3, f).await;
    let took = start.elapsed();
    let message = match r {
        Err(Error::Tls(m)) => m,
        other => panic!("{what}: expected Error::Tls, got {other:?}"),
    };
    assert!(message.contains(want), "{what}: {message:?} lacks {want:?}");
    assert!(
        took < CONNECT_TIMEOUT,
        "{what}: took {took:?}, not a prompt refusal"
    );
    message
}

/// Open, append (single entries, an atomic batch, a committed checkpoint),
/// close, reopen over mutual TLS: the recovery is exact, and the reopened
/// Wal keeps appending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_open_append_reopen_over_mutual_tls() {
    let (pki, endpoint) = secure::shared_tls_node().await;
    let opts = tls_options(&endpoint, &prefix("tls-store"), pki.client_tls());
    let store = EtcdStore::new(opts.clone());
    assert_no_key_material(pki, &format!("{store:?}"));
    let (wal, recovery) = Wal::open(store, WalOptions::default()).await.unwrap();
    assert!(recovery.collect::<Vec<_>>().await.is_empty());
    for i in 1..=3 {
        wal.append(format!("data-{i}").into_bytes()).await.unwrap();
    }
    wal.append_batch([&b"batch-a"[..], &b"batch-b"[..]])
        .await
        .unwrap();
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append(b"state".to_vec()).await.unwrap();
    cp.commit().await.unwrap();
    let last = wal.append(b"after-cp".to_vec()).await.unwrap();
    wal.close().await.unwrap();

    let (wal, recovery) = Wal::open(EtcdStore::new(opts), WalOptions::default())
        .await
        .unwrap();
    let entries: Vec<Entry> = recovery.map(|e| e.unwrap()).collect().await;
    assert_eq!(texts(&entries), ["state", "after-cp"]);
    assert_eq!(entries.last().unwrap().lsn, last);
    let next = wal.append(b"reopened".to_vec()).await.unwrap();
    assert_eq!(next, Lsn(last.0 + 1));
    wal.close().await.unwrap();
}

/// A reader over mutual TLS: `read_from` returns what the owner appended,
/// and `tail` (a watch over the same TLS connection) delivers an entry
/// appended after it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_read_from_and_tail_over_mutual_tls() {
    let (pki, endpoint) = secure::shared_tls_node().await;
    let opts = tls_options(&endpoint, &prefix("tls-reader"), pki.client_tls());
    let (wal, _) = Wal::open(EtcdStore::new(opts.clone()), WalOptions::default())
        .await
        .unwrap();
    let reader = EtcdReader::connect(opts).await.unwrap();
    assert_no_key_material(pki, &format!("{reader:?}"));
    assert_no_key_material(pki, &format!("{reader:#?}"));
    for i in 1..=5 {
        wal.append(format!("entry-{i}").into_bytes()).await.unwrap();
    }
    let records = reader
        .read_from(Lsn(1), ReadLimit::default())
        .await
        .unwrap();
    let data: Vec<(u64, String)> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Data)
        .map(|r| {
            (
                r.lsn.get(),
                String::from_utf8_lossy(&r.payload).into_owned(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = (1..=5).map(|i| (i, format!("entry-{i}"))).collect();
    assert_eq!(data, want);
    assert_eq!(reader.head().await.unwrap().0, Lsn(5));

    let mut tail = reader.tail(Lsn(5));
    let first = within(
        "tail: the existing entry",
        Duration::from_secs(10),
        tail.next(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((first.lsn, &first.payload[..]), (Lsn(5), &b"entry-5"[..]));
    let lsn = wal.append(b"late".to_vec()).await.unwrap();
    let late = within("tail: the new entry", Duration::from_secs(10), tail.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((late.lsn, &late.payload[..]), (lsn, &b"late"[..]));
    wal.close().await.unwrap();
}

/// A client trusting another CA: the store's open and the reader's connect
/// fail at once with `Error::Tls` saying the server's certificate is not
/// signed by the given CA. Also on a client built without the check at
/// connect (`with_client`), where the refusal comes from the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_fails_promptly_with_a_tls_error() {
    let (pki, endpoint) = secure::shared_tls_node().await;
    let wrong = EtcdTls::new()
        .ca_pem(secure::unrelated_ca_pem())
        .identity_pem(pki.client_cert_pem.clone(), pki.client_key_pem.clone());
    let opts = tls_options(&endpoint, &prefix("tls-wrong-ca"), wrong.clone());
    let want = "not signed by the CA given";
    let m = expect_tls_error(
        "open",
        want,
        Wal::open(EtcdStore::new(opts.clone()), WalOptions::default()),
    )
    .await;
    assert!(m.contains(&endpoint), "the endpoint is named: {m}");
    expect_tls_error("reader connect", want, EtcdReader::connect(opts.clone())).await;

    let client = Client::connect(
        [endpoint.as_str()],
        Some(ConnectOptions::new().with_tls(wrong.tls_options())),
    )
    .await
    .unwrap();
    let reader = EtcdReader::with_client(client.clone(), opts.clone()).unwrap();
    expect_tls_error("reader head on a raw client", want, reader.head()).await;
    expect_tls_error(
        "open on a raw client",
        want,
        Wal::open(EtcdStore::with_client(client, opts), WalOptions::default()),
    )
    .await;
}

/// Against `--client-cert-auth`: a client with no certificate, and one
/// whose certificate another CA signed, are refused by the server; both
/// get `Error::Tls` saying so, at once (etcd-client alone reports only
/// "operation was canceled" here, as TLS 1.3 tells the client after its
/// side of the handshake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refusing_the_client_certificate_is_a_tls_error() {
    let (pki, endpoint) = secure::shared_tls_node().await;
    let no_cert = tls_options(&endpoint, &prefix("tls-no-cert"), pki.ca_only_tls());
    let want = "requires a client certificate (--client-cert-auth) and this client has none";
    expect_tls_error(
        "open without a client certificate",
        want,
        Wal::open(EtcdStore::new(no_cert.clone()), WalOptions::default()),
    )
    .await;
    expect_tls_error(
        "reader without a client certificate",
        want,
        EtcdReader::connect(no_cert),
    )
    .await;

    let stranger = TestPki::generate();
    let foreign = pki
        .ca_only_tls()
        .identity_pem(stranger.client_cert_pem, stranger.client_key_pem);
    let opts = tls_options(&endpoint, &prefix("tls-foreign-cert"), foreign);
    expect_tls_error(
        "open with a certificate another CA signed",
        "the server refused this client's certificate",
        Wal::open(EtcdStore::new(opts), WalOptions::default()),
    )
    .await;
}

/// TLS to a member that serves plain `http://`: `Error::Tls`, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_server_is_a_tls_error() {
    let (pki, _) = secure::shared_tls_node().await;
    let plain = support::shared_endpoints().await;
    let endpoint = plain[0].replace("http://", "https://");
    let opts = tls_options(&endpoint, &prefix("tls-plain"), pki.client_tls());
    expect_tls_error(
        "reader connect",
        "does not serve TLS on this port",
        EtcdReader::connect(opts),
    )
    .await;
}

/// Misconfigurations caught before connecting: TLS with an `http://`
/// endpoint, an `https://` endpoint without TLS, a client key that is not
/// a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_misconfigurations_are_invalid_arguments() {
    let pki = TestPki::generate();
    let cases = [
        (
            tls_options("http://127.0.0.1:1", "/tls-cfg/", pki.client_tls()),
            "endpoints must be https://",
        ),
        (
            support::options(&["https://127.0.0.1:1".into()], "/tls-cfg/", "log"),
            "https:// needs TLS settings",
        ),
        (
            tls_options(
                "https://127.0.0.1:1",
                "/tls-cfg/",
                pki.ca_only_tls()
                    .identity_pem(pki.client_cert_pem.clone(), pki.client_cert_pem.clone()),
            ),
            "no usable private key",
        ),
    ];
    for (opts, want) in cases {
        match EtcdReader::connect(opts.clone()).await {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(want), "{m:?} lacks {want:?}"),
            other => panic!("expected InvalidArgument({want}), got {other:?}"),
        }
        match Wal::open(EtcdStore::new(opts), WalOptions::default()).await {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(want), "{m:?} lacks {want:?}"),
            other => panic!("expected InvalidArgument({want}), got {other:?}"),
        }
    }
}

/// `Debug` of the TLS settings, the options and a store shows that a
/// client certificate is set, never its key.
#[test]
fn debug_shows_no_key_material() {
    let pki = TestPki::generate();
    let tls = pki.client_tls();
    let opts =
        tls_options("https://127.0.0.1:2379", "/tls-debug/", tls.clone()).user("root", "pw-s3cret");
    let store = EtcdStore::new(opts.clone());
    for text in [
        format!("{tls:?}"),
        format!("{tls:#?}"),
        format!("{opts:?}"),
        format!("{opts:#?}"),
        format!("{store:?}"),
    ] {
        assert_no_key_material(&pki, &text);
        assert!(!text.contains("s3cret"), "password in {text}");
        assert!(
            text.contains("<redacted> key"),
            "the key's presence shows: {text}"
        );
    }
    // The check above would catch a leak: the key's body is long base64.
    assert!(pem_body_lines(&pki.client_key_pem).len() >= 2);
}

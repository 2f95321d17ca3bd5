//! End-to-end tests of the `walctl` binary on etcd: logs written through
//! wal-core + wal-etcd on a real etcd (a container started by
//! testcontainers from `WAL_ETCD_IMAGE`, or `WAL_ETCD_ENDPOINTS`), then read
//! by the binary. Docker or the image missing fails the tests (loudly under
//! `CI=true`), never skips them. Nothing sleeps to let things settle:
//! everything waits on a condition with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The etcd container plumbing of wal-etcd's own tests, reused as is.
#[path = "../../wal-etcd/tests/support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;
use wal_core::{Lsn, Wal, WalOptions};
use wal_etcd::{EtcdOptions, EtcdStore};

/// A log of its own: a unique prefix per test.
struct Log {
    endpoints: Vec<String>,
    prefix: String,
    name: String,
}

impl Log {
    async fn new(tag: &str) -> Log {
        Log {
            endpoints: support::shared_endpoints().await,
            prefix: format!("/{}/", support::unique(tag)),
            name: "log".into(),
        }
    }

    fn options(&self) -> EtcdOptions {
        support::options(&self.endpoints, &self.prefix, &self.name)
    }

    /// The target flags for walctl.
    fn args(&self) -> Vec<String> {
        vec![
            "--endpoints".into(),
            self.endpoints.join(","),
            "--prefix".into(),
            self.prefix.clone(),
            "--name".into(),
            self.name.clone(),
        ]
    }

    /// Runs walctl on this log (off the async runtime's threads).
    async fn walctl(&self, args: &[&str]) -> Output {
        let mut all = self.args();
        all.extend(args.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_walctl"))
                .args(&all)
                .env_remove("WALCTL_ETCD_ENDPOINTS")
                .output()
                .expect("running walctl")
        })
        .await
        .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes data entries `entry-<i>`, a committed checkpoint, and more data;
/// returns the Wal (still open: it owns the log) and every data Lsn's
/// payload.
async fn write_log(log: &Log, n: u64) -> (Wal, BTreeMap<u64, String>) {
    let (wal, _) = Wal::open(EtcdStore::new(log.options()), WalOptions::default())
        .await
        .unwrap();
    let mut data = BTreeMap::new();
    for i in 1..=n {
        let p = format!("entry-{i}");
        let lsn = wal.append(p.clone().into_bytes()).await.unwrap();
        data.insert(lsn.get(), p);
    }
    let mut cp = wal.begin_checkpoint().await.unwrap();
    cp.append(b"state-1".to_vec()).await.unwrap();
    cp.commit().await.unwrap();
    for i in 1..=3 {
        let p = format!("after-{i}");
        let lsn = wal.append(p.clone().into_bytes()).await.unwrap();
        data.insert(lsn.get(), p);
    }
    (wal, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_dump_verify_and_repair_on_a_live_log() {
    let log = Log::new("walctl-inspect").await;
    let (wal, data) = write_log(&log, 20).await;
    let head = wal.last_lsn().unwrap().get();
    let owner_id = {
        let reader = wal_etcd::EtcdReader::connect(log.options()).await.unwrap();
        reader.owner().await.unwrap().expect("the wal owns the log")
    };

    // inspect: owner, head, checkpoints.
    let o = log.walctl(&["--json", "inspect"]).await;
    assert!(o.status.success(), "inspect failed: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["backend"], "etcd");
    assert_eq!(v["head"], head);
    assert_eq!(v["last_lsn"], head);
    assert_eq!(v["owner"]["writer_id"], owner_id.writer_id.as_str());
    assert_eq!(v["owner"]["lease_id"], owner_id.lease);
    let ttl = v["owner"]["ttl_seconds"].as_u64().expect("a live lease");
    assert!((1..=10).contains(&ttl), "ttl {ttl}");
    assert!(v["record_keys"].as_u64().unwrap() >= 1);
    assert_eq!(v["checkpoints"]["committed"].as_array().unwrap().len(), 1);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    let o = log.walctl(&["inspect"]).await;
    assert!(o.status.success(), "inspect failed: {}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("owner: writer {}", owner_id.writer_id)),
        "{text}"
    );
    assert!(text.contains(&format!("head: lsn {head}")), "{text}");
    assert!(text.contains("lease TTL left"), "{text}");

    // dump --json: every dumped data record is what was appended at its
    // Lsn, and at least the data after the checkpoint is there (the commit
    // may have trimmed what came before).
    let o = log.walctl(&["--json", "dump", "--format", "utf8"]).await;
    assert!(o.status.success(), "dump failed: {}", stderr(&o));
    let mut seen = BTreeMap::new();
    let mut kinds = Vec::new();
    for line in stdout(&o).lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        kinds.push(r["kind"].as_str().unwrap().to_string());
        if r["kind"] == "data" {
            seen.insert(
                r["lsn"].as_u64().unwrap(),
                r["payload"].as_str().unwrap().to_string(),
            );
        }
        assert!(r.get("file").is_none(), "no file field on etcd: {line}");
    }
    for (lsn, p) in &seen {
        assert_eq!(data.get(lsn), Some(p), "lsn {lsn}");
    }
    for i in 1..=3 {
        assert!(
            seen.values().any(|p| *p == format!("after-{i}")),
            "{seen:?}"
        );
    }
    assert!(kinds.iter().any(|k| k == "checkpoint"), "{kinds:?}");
    let o = log
        .walctl(&["dump", "--format", "utf8", "--entries-only"])
        .await;
    assert!(o.status.success());
    assert!(stdout(&o).lines().last().unwrap().ends_with("after-3"));

    // verify: clean.
    let o = log.walctl(&["verify"]).await;
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok: no problems"));

    // repair: refused, one clear line, nothing changed.
    let o = log.walctl(&["repair", "--yes"]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("never takes ownership"), "{err}");
    assert!(err.contains("next owner"), "{err}");
    // The writer still owns the log and can append.
    wal.append(b"still-mine".to_vec()).await.unwrap();
    wal.close().await.unwrap();

    // After close: no owner.
    let o = log.walctl(&["--json", "inspect"]).await;
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["owner"].is_null(), "{v}");
    assert_eq!(v["head"], head + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_corrupt_and_uncommitted_keys() {
    let log = Log::new("walctl-verify").await;
    let (wal, _) = write_log(&log, 5).await;
    let head = wal.last_lsn().unwrap().get();
    wal.close().await.unwrap();
    let mut c = support::operator(&log.endpoints).await;

    // A key above the head: an append that never committed. Exit 3.
    let above = format!("{}{}/r/{:020}", log.prefix, log.name, head + 7);
    c.put(above.clone(), b"half an append".to_vec(), None)
        .await
        .unwrap();
    let o = log.walctl(&["verify"]).await;
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("next owner deletes them"),
        "{}",
        stdout(&o)
    );
    let o = log.walctl(&["--json", "inspect"]).await;
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["uncommitted_record_keys"], 1);
    c.delete(above, None).await.unwrap();

    // A committed key with a flipped byte: exit 4, the key named.
    let resp = c
        .get(
            format!("{}{}/r/", log.prefix, log.name),
            Some(wal_etcd::etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let kv = resp.kvs().last().unwrap();
    let key = kv.key_str().unwrap().to_string();
    let mut value = kv.value().to_vec();
    value[3] ^= 0x40;
    c.put(key.clone(), value, None).await.unwrap();
    let o = log.walctl(&["verify"]).await;
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(&key), "{}", stdout(&o));
    assert!(stdout(&o).contains("checksum"), "{}", stdout(&o));
    let o = log.walctl(&["--json", "verify"]).await;
    assert_eq!(o.status.code(), Some(4));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["status"], "corrupt");
    assert_eq!(v["problems"][0]["key"], key.as_str());
}

/// Waits (with a deadline) for the JSON line whose payload is `want`;
/// returns its Lsn.
async fn wait_for(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, want: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let line = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("tail -f never printed {want}"))
            .unwrap_or_else(|| panic!("tail -f exited before printing {want}"));
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["payload"] == want {
            return v["lsn"].as_u64().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follow_sees_an_entry_appended_after_it_started() {
    let log = Log::new("walctl-tail").await;
    let (wal, _) = Wal::open(EtcdStore::new(log.options()), WalOptions::default())
        .await
        .unwrap();
    for i in 1..=3 {
        wal.append(format!("early-{i}").into_bytes()).await.unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_walctl"))
        .args(log.args())
        .args(["--json", "tail", "-f", "--format", "utf8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The existing entries first (so the tail is running) ...
    assert_eq!(wait_for(&mut rx, "early-3").await, 3);
    // ... then one appended now arrives through the watch.
    let lsn = wal.append(b"late".to_vec()).await.unwrap();
    assert_eq!(wait_for(&mut rx, "late").await, lsn.get());
    child.kill().unwrap();
    child.wait().unwrap();
    wal.close().await.unwrap();
    assert_eq!(lsn, Lsn(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_etcd_prints_json_and_cleans_up() {
    let log = Log::new("walctl-bench").await;
    let o = log
        .walctl(&[
            "--json",
            "bench",
            "etcd",
            "--count",
            "40",
            "--writers",
            "4",
            "--compare",
        ])
        .await;
    assert!(o.status.success(), "bench failed: {}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["benchmark"], "etcd");
    assert_eq!(v["writers"], 4);
    let rows = v["rows"].as_array().unwrap();
    let systems: Vec<_> = rows.iter().map(|r| r["system"].as_str().unwrap()).collect();
    assert_eq!(
        systems,
        ["wal-etcd", "raw-put", "raw-put-shared", "raw-fenced-txn"]
    );
    for r in rows {
        assert_eq!(r["entries"], 40, "{r}");
        assert!(r["entries_per_sec"].as_f64().unwrap() > 0.0);
    }
    for ratio in ["wal_vs_raw", "wal_vs_raw_shared", "wal_vs_fenced_limit"] {
        assert!(v["ratios"][ratio].as_f64().unwrap() > 0.0, "{ratio}");
    }
    let max = v["batches"]["max"].as_u64().unwrap();
    assert!((1..=4).contains(&max), "entries per txn, 4 writers: {max}");
    // Every key it wrote is gone.
    let mut c = support::operator(&log.endpoints).await;
    let left = c
        .get(
            log.prefix.as_str(),
            Some(
                wal_etcd::etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(left.count(), 0);
}

/// `inspect` reports each member's database size against the quota and
/// warns near it: with the default (2 GiB) the test database is far below
/// it; with `--quota-bytes` just above its size it is near.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_warns_when_the_database_is_near_its_quota() {
    let log = Log::new("walctl-quota").await;
    let (wal, _) = write_log(&log, 5).await;
    wal.close().await.unwrap();

    let o = log.walctl(&["--json", "inspect"]).await;
    assert!(o.status.success(), "inspect failed: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let members = v["space"]["members"].as_array().unwrap();
    assert_eq!(members.len(), log.endpoints.len(), "{v}");
    let db_size = members[0]["db_size"].as_u64().unwrap();
    assert!(db_size > 0, "{v}");
    assert_eq!(v["space"]["warnings"].as_array().unwrap().len(), 0, "{v}");

    let near = (db_size + db_size / 10).to_string();
    let o = log.walctl(&["inspect", "--quota-bytes", &near]).await;
    assert!(o.status.success(), "inspect failed: {}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("warning") && err.contains("of its quota"),
        "no quota warning: {err}"
    );
    assert!(stdout(&o).contains("--quota-bytes"), "{}", stdout(&o));
}

/// walctl's TLS flags against an etcd serving https:// with
/// `--client-cert-auth` (certificates made by the test): a log written over
/// mutual TLS, then read by walctl with `--cacert/--cert/--key`, and by the
/// same files given in `WALCTL_ETCD_CACERT/_CERT/_KEY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_and_tail_over_mutual_tls() {
    let (pki, endpoint) = support::secure::shared_tls_node().await;
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write_client_files(dir.path());
    let log = Log {
        endpoints: vec![endpoint.clone()],
        prefix: format!("/{}/", support::unique("walctl-tls")),
        name: "log".into(),
    };
    let options = log.options().tls(pki.client_tls());
    let (wal, _) = Wal::open(EtcdStore::new(options), WalOptions::default())
        .await
        .unwrap();
    for i in 1..=5 {
        wal.append(format!("tls-{i}").into_bytes()).await.unwrap();
    }
    let flags = [
        "--cacert".to_string(),
        files.ca.display().to_string(),
        "--cert".into(),
        files.cert.display().to_string(),
        "--key".into(),
        files.key.display().to_string(),
    ];
    fn with_flags<'a>(flags: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
        let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        all
    }

    let o = log
        .walctl(&with_flags(&flags, &["--json", "inspect"]))
        .await;
    assert!(
        o.status.success(),
        "inspect over TLS failed: {}",
        stderr(&o)
    );
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["backend"], "etcd");
    assert_eq!(v["head"], 5);
    assert_eq!(v["last_lsn"], 5);

    let o = log
        .walctl(&with_flags(
            &flags,
            &["--json", "tail", "-n", "3", "--format", "utf8"],
        ))
        .await;
    assert!(o.status.success(), "tail over TLS failed: {}", stderr(&o));
    let tail: Vec<(u64, String)> = stdout(&o)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["lsn"].as_u64().unwrap(),
                v["payload"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        [
            (3, "tls-3".into()),
            (4, "tls-4".into()),
            (5, "tls-5".into())
        ]
    );

    // The same files from the environment, and the endpoint without a
    // scheme: TLS flags make it https://.
    let all = vec![
        "--endpoints".to_string(),
        endpoint.trim_start_matches("https://").to_string(),
        "--prefix".into(),
        log.prefix.clone(),
        "--name".into(),
        log.name.clone(),
        "--json".into(),
        "inspect".into(),
    ];
    let o = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_walctl"))
            .args(&all)
            .env_remove("WALCTL_ETCD_ENDPOINTS")
            .env("WALCTL_ETCD_CACERT", &files.ca)
            .env("WALCTL_ETCD_CERT", &files.cert)
            .env("WALCTL_ETCD_KEY", &files.key)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        o.status.success(),
        "inspect with TLS from env failed: {}",
        stderr(&o)
    );
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["head"], 5);
    wal.close().await.unwrap();
}

/// walctl with the wrong CA, and without a client certificate, against a
/// `--client-cert-auth` etcd: exit 1 at once with one line saying it is a
/// TLS problem and what to fix, not a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_are_named_promptly() {
    let (pki, endpoint) = support::secure::shared_tls_node().await;
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write_client_files(dir.path());
    let wrong_ca = dir.path().join("wrong-ca.crt");
    std::fs::write(&wrong_ca, support::secure::unrelated_ca_pem()).unwrap();
    let log = Log {
        endpoints: vec![endpoint],
        prefix: "/walctl-tls-fail/".into(),
        name: "log".into(),
    };
    let path = |p: &std::path::Path| p.display().to_string();
    let cases = [
        (
            vec![
                "--cacert",
                &path(&wrong_ca),
                "--cert",
                &path(&files.cert),
                "--key",
                &path(&files.key),
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
            "not signed by the CA given",
        ),
        (
            vec!["--cacert".to_string(), path(&files.ca)],
            "requires a client certificate (--client-cert-auth) and this client has none",
        ),
    ];
    for (flags, want) in cases {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.push("inspect");
        let start = std::time::Instant::now();
        let o = log.walctl(&args).await;
        let took = start.elapsed();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("tls: "), "{err}");
        assert!(err.contains(want), "{err} lacks {want}");
        // walctl's connect timeout is 3 s; a refusal comes long before.
        assert!(took < Duration::from_secs(3), "{args:?} took {took:?}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
    }
}

/// `list --prefix P` on etcd: three logs on one `EtcdSession` and one on a
/// lease of its own, one of the session's then closed: every log is listed
/// with its head, key count and owner, the session's owners name one lease
/// and count the logs on it, the closed log has no owner; and keys of other
/// prefixes are not listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_every_log_under_a_prefix_with_head_and_owner() {
    use wal_etcd::EtcdSession;
    let log = Log::new("list").await;
    let opts = |name: &str| log.options().name(name).writer_id(format!("w-{name}"));
    let session = EtcdSession::connect(&log.options()).await.unwrap();
    let mut wals = Vec::new();
    for (name, n) in [("alpha", 3u64), ("beta", 5), ("gamma", 1)] {
        let (wal, _) = Wal::open(
            EtcdStore::with_session(session.clone(), opts(name)),
            WalOptions::default(),
        )
        .await
        .unwrap();
        for i in 0..n {
            wal.append(format!("{name}-{i}")).await.unwrap();
        }
        wals.push(wal);
    }
    wals[2].close().await.unwrap();
    let (solo, _) = Wal::open(EtcdStore::new(opts("solo")), WalOptions::default())
        .await
        .unwrap();
    solo.append("x").await.unwrap();
    // Another prefix's log is not listed.
    let other = support::options(&log.endpoints, &format!("{}other/", log.prefix), "z");
    let (z, _) = Wal::open(EtcdStore::new(other), WalOptions::default())
        .await
        .unwrap();
    z.append("z").await.unwrap();

    let o = log.walctl(&["--json", "list"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["backend"], "etcd");
    let logs = v["logs"].as_array().unwrap();
    let by_name: BTreeMap<&str, &Value> = logs
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l))
        .collect();
    assert_eq!(
        by_name.keys().copied().collect::<Vec<_>>(),
        ["alpha", "beta", "gamma", "solo"],
        "{v}"
    );
    for (name, head) in [("alpha", 3), ("beta", 5), ("gamma", 1), ("solo", 1)] {
        assert_eq!(by_name[name]["head"], head, "{name}: {v}");
        // head + owner (if owned) + at least one record key.
        assert!(by_name[name]["keys"].as_u64().unwrap() >= 2, "{name}: {v}");
    }
    let lease = session.lease_id();
    for name in ["alpha", "beta"] {
        let owner = &by_name[name]["owner"];
        assert_eq!(owner["writer_id"], format!("w-{name}"), "{v}");
        assert_eq!(owner["lease_id"], lease, "{v}");
        assert_eq!(owner["logs_on_lease"], 2, "{v}");
    }
    assert!(by_name["gamma"]["owner"].is_null(), "closed: no owner: {v}");
    assert_eq!(by_name["solo"]["owner"]["logs_on_lease"], 1, "{v}");
    assert_ne!(by_name["solo"]["owner"]["lease_id"], lease, "{v}");

    let o = log.walctl(&["list"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("4 log(s) under"), "{text}");
    let a = text.lines().find(|l| l.starts_with("alpha ")).expect(&text);
    assert!(
        a.contains("w-alpha") && a.contains("2 logs on this lease"),
        "{a}"
    );

    for w in [&wals[0], &wals[1], &solo, &z] {
        w.close().await.unwrap();
    }
    session.close().await.unwrap();
}

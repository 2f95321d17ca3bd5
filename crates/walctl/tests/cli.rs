//! End-to-end tests of the `walctl` binary against real log directories
//! written through wal-core + wal-fs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs::OpenOptions,
    io::{BufRead, BufReader},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use wal_core::{Wal, WalOptions};
use wal_fs::{FsOptions, FsStore};

fn walctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walctl"))
}

fn run(args: &[&str]) -> Output {
    walctl().args(args).output().expect("running walctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes `n` data entries `entry-<i>` (Lsns 1..=n).
fn write_data(dir: &Path, n: u64, opts: FsOptions) {
    rt().block_on(async {
        let (wal, _) = Wal::open(FsStore::new(dir, opts), WalOptions::default())
            .await
            .unwrap();
        for i in 1..=n {
            wal.append(format!("entry-{i}").into_bytes()).await.unwrap();
        }
        wal.close().await.unwrap();
    });
}

/// Writes `n` data entries `entry-<i>` (Lsns 1..=n), then a committed
/// checkpoint (begin n+1, 2 entries, commit n+4), then one more data entry
/// and an aborted checkpoint (begin n+6, abort n+7). One segment, so the
/// commit trims nothing.
fn write_log(dir: &Path, n: u64) {
    rt().block_on(async {
        let (wal, _) = Wal::open(
            FsStore::new(dir, FsOptions::default()),
            WalOptions::default(),
        )
        .await
        .unwrap();
        for i in 1..=n {
            wal.append(format!("entry-{i}").into_bytes()).await.unwrap();
        }
        let mut cp = wal.begin_checkpoint().await.unwrap();
        cp.append(b"state-1".to_vec()).await.unwrap();
        cp.append(b"state-2".to_vec()).await.unwrap();
        cp.commit().await.unwrap();
        wal.append(b"after".to_vec()).await.unwrap();
        let cp = wal.begin_checkpoint().await.unwrap();
        cp.abort().await.unwrap();
        wal.close().await.unwrap();
    });
}

/// Appends plain data entries to an existing log.
fn append(dir: &Path, payloads: &[&str]) {
    rt().block_on(async {
        let (wal, _) = Wal::open(
            FsStore::new(dir, FsOptions::default()),
            WalOptions::default(),
        )
        .await
        .unwrap();
        for p in payloads {
            wal.append(p.as_bytes().to_vec()).await.unwrap();
        }
        wal.close().await.unwrap();
    });
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], offset).unwrap();
}

fn log_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    (tmp, dir)
}

fn d(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn inspect_shows_segments_range_and_checkpoints() {
    let (_t, dir) = log_dir();
    write_log(&dir, 50);
    let o = run(&["--dir", d(&dir), "inspect"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // 50 data + begin + 2 state + commit + data + begin + abort = 57.
    assert!(out.contains("lsn range: 1..=57 (57 records)"), "{out}");
    assert!(
        out.contains("1 committed, 1 aborted, 0 unfinished"),
        "{out}"
    );
    assert!(out.contains("00000000000000000001.wal"), "{out}");
    assert!(out.contains("problems: none"), "{out}");

    let o = run(&["--dir", d(&dir), "inspect", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["first_lsn"], 1);
    assert_eq!(v["last_lsn"], 57);
    assert_eq!(v["data_entries"], 51);
    assert_eq!(v["checkpoint_entries"], 2);
    assert_eq!(v["segments"].as_array().unwrap().len(), 1);
    assert_eq!(v["checkpoints"]["recovery_uses"]["begin"], 51);
    assert_eq!(v["checkpoints"]["recovery_uses"]["end"], 54);
    assert_eq!(v["checkpoints"]["recovery_uses"]["entries"], 2);
}

#[test]
fn dump_json_lines_parse_and_respect_the_range() {
    let (_t, dir) = log_dir();
    write_log(&dir, 30);
    let o = run(&[
        "--dir",
        d(&dir),
        "dump",
        "--from",
        "5",
        "--to",
        "12",
        "--format",
        "utf8",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    for (i, v) in lines.iter().enumerate() {
        let lsn = 5 + i as u64;
        assert_eq!(v["lsn"], lsn);
        assert_eq!(v["kind"], "data");
        assert_eq!(v["payload"], format!("entry-{lsn}"));
    }

    // Hex by default, markers included; raw writes bare payloads.
    let o = run(&["--dir", d(&dir), "dump", "--from", "31"]);
    let out = stdout(&o);
    assert!(out.contains("checkpoint-begin"), "{out}");
    assert!(out.contains("checkpoint-commit"), "{out}");
    // "state-1" in lower-case hex, spelled out rather than computed.
    assert!(out.contains("73746174652d31"), "{out}");
    let o = run(&[
        "--dir",
        d(&dir),
        "dump",
        "--from",
        "1",
        "--to",
        "2",
        "--format",
        "raw",
    ]);
    assert_eq!(stdout(&o), "entry-1entry-2");
    let o = run(&["--dir", d(&dir), "dump", "--format", "raw", "--json"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn verify_clean_log_exits_zero() {
    let (_t, dir) = log_dir();
    write_data(&dir, 100, FsOptions::default().segment_bytes(2048));
    let o = run(&["--dir", d(&dir), "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok: no problems"));
    let o = run(&["--dir", d(&dir), "verify", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "clean");
    assert_eq!(v["records"], 100);
}

#[test]
fn verify_names_file_and_offset_of_every_flipped_byte() {
    let (_t, dir) = log_dir();
    write_data(&dir, 100, FsOptions::default().segment_bytes(1024));
    let segs = segments(&dir);
    assert!(segs.len() >= 3);
    // entry-N payloads are 7-9 bytes: frames of 40 bytes (32 + 8 rounded).
    // Damage the payload of the 3rd frame of the first segment and of the
    // 2nd frame of the second.
    let first = 48 + 2 * 40;
    flip(&segs[0], first + 33);
    let second_start = 48 + 40;
    flip(&segs[1], second_start + 34);
    let o = run(&["--dir", d(&dir), "verify"]);
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{} at offset {first}", segs[0].display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("{} at offset {second_start}", segs[1].display())),
        "{out}"
    );
    assert!(out.contains("checksum mismatch"), "{out}");
    let o = run(&["--dir", d(&dir), "verify", "--json"]);
    assert_eq!(o.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "corrupt");
    assert_eq!(v["problems"].as_array().unwrap().len(), 2);
    assert_eq!(v["problems"][0]["offset"], first);
}

/// Appends bytes to the last segment that look like the start of a frame
/// that a crash cut short.
fn tear_tail(dir: &Path) -> (PathBuf, u64) {
    let last = segments(dir).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    let f = OpenOptions::new().write(true).open(&last).unwrap();
    f.write_all_at(&[0xde, 0xad, 0xbe, 0xef, 9, 0, 0, 0, 1, 1, 0, 0], len)
        .unwrap();
    (last, len)
}

#[test]
fn repair_dry_run_then_yes_cuts_a_torn_tail() {
    let (_t, dir) = log_dir();
    write_log(&dir, 20);
    let (last, len) = tear_tail(&dir);
    let o = run(&["--dir", d(&dir), "verify"]);
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert!(stdout(&o).contains(&format!("torn-tail: {} at offset {len}", last.display())));

    let o = run(&["--dir", d(&dir), "repair"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("would truncate {} to {len} bytes", last.display())),
        "{out}"
    );
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(
        std::fs::metadata(&last).unwrap().len(),
        len + 12,
        "dry run changed the file"
    );

    let o = run(&["--dir", d(&dir), "repair", "--yes", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["applied"], true);
    assert_eq!(v["lost_records"], 0);
    assert_eq!(v["keep_last_lsn"], 27);
    assert_eq!(std::fs::metadata(&last).unwrap().len(), len);
    let o = run(&["--dir", d(&dir), "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = run(&["--dir", d(&dir), "repair"]);
    assert!(stdout(&o).contains("nothing to repair"));
}

#[test]
fn repair_of_mid_log_damage_reports_lost_records_and_reopens() {
    let (_t, dir) = log_dir();
    write_data(&dir, 100, FsOptions::default().segment_bytes(1024));
    let segs = segments(&dir);
    flip(&segs[1], 48 + 40 + 35); // second frame of the second segment
    let o = run(&["--dir", d(&dir), "repair", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["applied"], false);
    let first_of_second: u64 = segs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(v["keep_last_lsn"], first_of_second);
    // Everything after the damaged frame is lost (100 records in all) but
    // for the damaged one itself.
    assert_eq!(v["lost_records"], 100 - first_of_second - 1);
    let o = run(&["--dir", d(&dir), "repair", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(segments(&dir).len(), 2);
    // The log opens, and ends where the repair said.
    rt().block_on(async {
        let (wal, _) = Wal::open(
            FsStore::new(&dir, FsOptions::default()),
            WalOptions::default(),
        )
        .await
        .unwrap();
        // The kept records end where the repair said; a high-water marker
        // follows them, so the cut lsns (up to 100) are not handed out again.
        assert_eq!(wal.last_lsn(), Some(wal_core::Lsn(101)));
        assert!(wal
            .read(wal_core::Lsn(first_of_second))
            .await
            .unwrap()
            .is_some());
        assert!(wal
            .read(wal_core::Lsn(first_of_second + 1))
            .await
            .unwrap()
            .is_none());
        assert!(wal.append(b"new".to_vec()).await.unwrap() > wal_core::Lsn(100));
        wal.close().await.unwrap();
    });
}

/// A bad header on the last segment: the segment is cut whole, and the
/// high-water marker still goes above every lsn it held (its id survives
/// the damage, so its frames check out). Was failing before fsgate: walctl
/// wrote no marker when the damaged segment's header was bad, so the next
/// writer reused the cut lsns.
#[test]
fn repair_of_a_bad_last_header_keeps_the_high_water_mark() {
    let (_t, dir) = log_dir();
    write_data(&dir, 100, FsOptions::default().segment_bytes(1024));
    let last = segments(&dir).pop().unwrap();
    let first_of_last: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    assert!(first_of_last < 100);
    flip(&last, 44); // the header checksum
    let o = run(&["--dir", d(&dir), "repair", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["applied"], false);
    assert_eq!(v["keep_last_lsn"], first_of_last - 1);
    assert_eq!(v["high_water_lsn"], 101);
    let o = run(&["--dir", d(&dir), "repair", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("wrote a high-water marker at lsn 101"),
        "{out}"
    );
    rt().block_on(async {
        let (wal, _) = Wal::open(
            FsStore::new(&dir, FsOptions::default()),
            WalOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(wal.last_lsn(), Some(wal_core::Lsn(101)));
        assert!(wal.append(b"new".to_vec()).await.unwrap() > wal_core::Lsn(100));
        wal.close().await.unwrap();
    });
}

#[test]
fn repair_yes_refuses_a_log_with_a_live_writer() {
    let (_t, dir) = log_dir();
    write_log(&dir, 5);
    tear_tail(&dir);
    // What a live writer holds: flock on the log directory itself.
    let lock = std::fs::File::open(&dir).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let o = run(&["--dir", d(&dir), "repair", "--yes"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("locked"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn tail_follow_sees_an_entry_appended_after_it_started() {
    let (_t, dir) = log_dir();
    write_log(&dir, 3);
    let mut child = walctl()
        .args([
            "--dir",
            d(&dir),
            "tail",
            "-f",
            "-n",
            "1",
            "--json",
            "--format",
            "utf8",
            "--interval-ms",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("tail did not print {want:?} in time"));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["payload"] == want {
                return v;
            }
        }
    };
    // The last record is the abort marker: its payload is the begin Lsn.
    let v = wait_for("\0\0\0\0\0\0\0\u{9}");
    assert_eq!(v["kind"], "checkpoint-abort");
    append(&dir, &["appended-later"]);
    let v = wait_for("appended-later");
    assert_eq!(v["lsn"], 11);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bench_fs_json_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&[
        "--dir",
        d(tmp.path()),
        "bench",
        "fs",
        "--writers",
        "4",
        "--size",
        "128",
        "--count",
        "200",
        "--compare",
        "--reader",
        "--blocking",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let systems: Vec<_> = rows.iter().map(|r| r["system"].as_str().unwrap()).collect();
    assert_eq!(
        systems,
        [
            "wal-fs",
            "wal-fs-blocking",
            "wal-fs+reader",
            "raw-fdatasync*",
            "raw-group-commit",
            "okaywal"
        ]
    );
    for r in rows {
        assert_eq!(r["entries"], 200, "{r}");
        assert!(r["entries_per_sec"].as_f64().unwrap() > 0.0);
        assert!(r["p99_us"].as_u64().unwrap() >= r["p50_us"].as_u64().unwrap());
    }
    // 200 entries in batches of 1 to 4 (the writers).
    let b = &v["batches"];
    let (batches, max) = (b["batches"].as_u64().unwrap(), b["max"].as_u64().unwrap());
    assert!(
        (50..=200).contains(&batches) && (1..=4).contains(&max),
        "{b}"
    );
    assert!(v["reader"]["passes"].as_u64().unwrap() >= 1);
    for ratio in [
        "wal_vs_raw",
        "wal_vs_group_commit",
        "wal_vs_okaywal",
        "blocking_vs_raw",
        "with_reader_vs_without",
        "reader_vs_raw_read",
    ] {
        assert!(v["ratios"][ratio].as_f64().unwrap() > 0.0, "{ratio}");
    }
    // The work directory is gone afterwards.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn bench_recovery_json_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&[
        "--dir",
        d(tmp.path()),
        "bench",
        "recovery",
        "--recovery-bytes",
        "1MiB",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["entries"], 1024);
    assert!(v["ratio_vs_raw_read"].as_f64().unwrap() > 0.0);
}

#[test]
fn errors_are_one_line_with_a_nonzero_exit() {
    let o = run(&["--dir", "/nonexistent/walctl-test", "inspect"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not a directory"));
    let o = run(&["inspect"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--dir"));
    // etcd: nothing listens on port 1; one line, exit 1.
    let o = run(&[
        "--endpoints",
        "http://127.0.0.1:1",
        "--name",
        "x",
        "inspect",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("unavailable"), "{}", stderr(&o));
    let o = run(&["--endpoints", "http://127.0.0.1:1", "inspect"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--name"), "{}", stderr(&o));
    let o = run(&["--dir", "/tmp", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

/// A `--dir` that holds no log is an error for every command that reads a
/// log, not an empty report that passes for a clean, empty log.
#[test]
fn a_directory_without_a_log_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let stray = tmp.path().join("stray");
    std::fs::create_dir(&stray).unwrap();
    std::fs::write(stray.join("notes.txt"), "not a log").unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "not a directory").unwrap();
    let missing = tmp.path().join("missing");
    let commands: [&[&str]; 7] = [
        &["inspect"],
        &["inspect", "--json"],
        &["verify"],
        &["verify", "--json"],
        &["tail", "-n", "5"],
        &["repair"],
        &["dump"],
    ];
    for (dir, why) in [
        (&empty, "holds no segment files"),
        (&stray, "holds no segment files"),
        (&file, "not a directory"),
        (&missing, "not a directory (it does not exist)"),
    ] {
        for cmd in commands {
            let mut args = vec!["--dir", d(dir)];
            args.extend_from_slice(cmd);
            let o = run(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert_eq!(stdout(&o), "", "{args:?} printed a report");
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
            assert!(err.contains("no log at"), "{args:?}: {err}");
            assert!(err.contains(why), "{args:?}: {err}");
        }
    }
    // `repair --yes` changes nothing there.
    let o = run(&["--dir", d(&empty), "repair", "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

/// A log opened once and closed without an entry is a log (it has the lock
/// file): an empty report, exit 0.
#[test]
fn an_empty_log_is_not_an_error() {
    let (_t, dir) = log_dir();
    write_data(&dir, 0, FsOptions::default());
    assert!(segments(&dir).is_empty(), "{:?}", segments(&dir));
    let o = run(&["--dir", d(&dir), "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&["--dir", d(&dir), "inspect", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["segments"].as_array().map(Vec::len), Some(0), "{v}");
}

/// `--help` never echoes a value read from the environment: the endpoints
/// may carry `user:password@`, the password variable is never shown, nor
/// where the TLS files (the client key) are.
#[test]
fn help_does_not_print_env_values() {
    for args in [&["--help"][..], &["inspect", "--help"][..]] {
        let o = walctl()
            .args(args)
            .env(
                "WALCTL_ETCD_ENDPOINTS",
                "http://wal:ep-s3cret@127.0.0.1:2379",
            )
            .env("WALCTL_ETCD_PASSWORD", "pw-s3cret")
            .env("WALCTL_ETCD_CACERT", "/tls/ca-s3cret.crt")
            .env("WALCTL_ETCD_CERT", "/tls/cert-s3cret.crt")
            .env("WALCTL_ETCD_KEY", "/tls/key-s3cret.key")
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert!(text.contains("--endpoints"), "{text}");
        assert!(text.contains("WALCTL_ETCD_KEY"), "{text}");
        assert!(
            !text.contains("s3cret"),
            "{args:?} printed a secret: {text}"
        );
    }
}

/// `list --dir PARENT` finds the log directories under PARENT (not other
/// directories or files), with each log's first and last Lsn, segment count
/// and size, as a table and as JSON.
#[test]
fn list_finds_the_log_directories_under_a_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path();
    write_data(&parent.join("alpha"), 5, FsOptions::default());
    write_data(&parent.join("beta"), 12, FsOptions::default());
    std::fs::create_dir(parent.join("not-a-log")).unwrap();
    std::fs::write(parent.join("stray.txt"), b"x").unwrap();

    let o = run(&["--dir", d(parent), "--json", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["backend"], "fs");
    let logs = v["logs"].as_array().unwrap();
    let names: Vec<&str> = logs.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    for (l, last) in logs.iter().zip([5, 12]) {
        assert_eq!(l["first_lsn"], 1, "{l}");
        assert_eq!(l["last_lsn"], last, "{l}");
        assert!(l["segments"].as_u64().unwrap() >= 1, "{l}");
        assert!(l["bytes"].as_u64().unwrap() > 0, "{l}");
        assert_eq!(l["clean"], true, "{l}");
    }

    let o = run(&["--dir", d(parent), "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("2 log(s) under"), "{text}");
    let beta = text.lines().find(|l| l.starts_with("beta")).expect(&text);
    assert!(beta.contains(" 12 ") && beta.contains("clean"), "{beta}");
    assert!(!text.contains("not-a-log"), "{text}");
}

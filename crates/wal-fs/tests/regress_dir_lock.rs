//! Only one writer process owns a log directory, even when `wal.lock` is
//! deleted or replaced while the owner holds it: the lock is on the
//! directory itself, not on a path inside it.
#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
};

/// A running `wal-fs-lock-child` and the first line it printed.
struct Writer {
    child: Child,
    stdin: ChildStdin,
    line: String,
}

fn spawn(dir: &Path) -> Writer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wal-fs-lock-child"))
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    // Blocks until the child has opened the log or failed to.
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Writer {
        child,
        stdin,
        line: line.trim().to_string(),
    }
}

impl Writer {
    /// Tells an owner to close the log; returns its exit status.
    fn stop(mut self) -> i32 {
        let _ = self.stdin.write_all(b"stop\n");
        drop(self.stdin);
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

fn second_writer_is_refused(dir: &Path, what: &str) {
    let second = spawn(dir);
    let line = second.line.clone();
    let code = second.stop();
    assert!(
        line.starts_with("LOCKED"),
        "{what}: a second writer got in: {line:?}"
    );
    assert_eq!(code, 3, "{what}");
}

#[test]
fn a_second_writer_process_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let first = spawn(&dir);
    assert_eq!(first.line, "READY");
    second_writer_is_refused(&dir, "wal.lock in place");
    assert_eq!(first.stop(), 0);
    // Released with its owner.
    let next = spawn(&dir);
    assert_eq!(next.line, "READY");
    assert_eq!(next.stop(), 0);
}

#[test]
fn deleting_the_lock_file_does_not_let_a_second_writer_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let first = spawn(&dir);
    assert_eq!(first.line, "READY");
    std::fs::remove_file(dir.join(wal_fs::LOCK_FILE_NAME)).unwrap();
    second_writer_is_refused(&dir, "wal.lock deleted");
    assert_eq!(first.stop(), 0);
}

#[test]
fn replacing_the_lock_file_does_not_let_a_second_writer_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let first = spawn(&dir);
    assert_eq!(first.line, "READY");
    let other = tmp.path().join("other.lock");
    std::fs::write(&other, "pid 1\n").unwrap();
    std::fs::rename(&other, dir.join(wal_fs::LOCK_FILE_NAME)).unwrap();
    second_writer_is_refused(&dir, "wal.lock replaced");
    assert_eq!(first.stop(), 0);
}

//! Fault injection through the file layer: a failing fdatasync, a short
//! write, ENOSPC on a write and on a segment allocation. Each time the Wal
//! is poisoned, nothing later is acknowledged or written, and a reopen with
//! the real file layer recovers everything acknowledged before the fault.
#![allow(clippy::unwrap_used)]

use std::{
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::Path,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use wal_core::{Error, Lsn, Wal, WalOptions};
use wal_fs::{FileIo, FsOptions, FsStore, StdFileIo, SyncMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The next fdatasync fails with EIO.
    FailSync,
    /// The next write lands half its bytes, then fails with ENOSPC.
    ShortWrite,
    /// The next write fails with ENOSPC, writing nothing.
    Enospc,
    /// The next segment allocation fails with ENOSPC.
    EnospcAllocate,
}

/// The real file layer, failing once on command.
#[derive(Debug, Default)]
struct FaultyIo {
    armed: Mutex<Option<Fault>>,
}

impl FaultyIo {
    fn arm(&self, f: Fault) {
        *self.armed.lock().unwrap() = Some(f);
    }
    fn take(&self, f: Fault) -> bool {
        let mut a = self.armed.lock().unwrap();
        if *a == Some(f) {
            *a = None;
            true
        } else {
            false
        }
    }
    fn fired(&self) -> bool {
        self.armed.lock().unwrap().is_none()
    }
}

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

impl FileIo for FaultyIo {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.take(Fault::Enospc) {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        if self.take(Fault::ShortWrite) {
            file.write_all_at(&buf[..buf.len() / 2], offset)?;
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        StdFileIo.write_all_at(file, buf, offset)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        if self.take(Fault::FailSync) {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        StdFileIo.sync_data(file)
    }
    fn allocate(&self, file: &File, len: u64) -> io::Result<()> {
        if self.take(Fault::EnospcAllocate) {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        StdFileIo.allocate(file, len)
    }
}

fn options() -> FsOptions {
    FsOptions::default().segment_bytes(4096)
}

fn payload(i: u32) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.resize(300, i as u8);
    v
}

fn os_error(e: &Error) -> Option<i32> {
    match e.root_cause() {
        Error::Io(io) => io.raw_os_error(),
        _ => None,
    }
}

async fn recover(dir: &Path) -> Vec<(Lsn, u32)> {
    let (wal, rec) = Wal::open(FsStore::new(dir, options()), WalOptions::default())
        .await
        .unwrap();
    let got = rec
        .map(|e| {
            let e = e.unwrap();
            (
                e.lsn,
                u32::from_le_bytes(e.payload[..4].try_into().unwrap()),
            )
        })
        .collect()
        .await;
    wal.close().await.unwrap();
    got
}

/// Appends acknowledged entries, arms `fault`, appends until it fires, and
/// checks the Wal and the recovered log.
async fn run(fault: Fault, sync_mode: SyncMode) {
    let tmp = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyIo::default());
    let store = FsStore::new(tmp.path(), options().sync_mode(sync_mode)).with_file_io(io.clone());
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..20u32 {
        let lsn = if i % 4 == 0 {
            let lsns = wal
                .append_batch([payload(i), payload(1000 + i)])
                .await
                .unwrap();
            acked.push((lsns[1], 1000 + i));
            lsns[0]
        } else {
            wal.append(payload(i)).await.unwrap()
        };
        acked.push((lsn, i));
    }
    if sync_mode == SyncMode::None {
        wal.sync().await.unwrap();
    }
    acked.sort();
    io.arm(fault);
    let mut err = None;
    let mut failed_lsns = Vec::new();
    for i in 100..140u32 {
        let r = if sync_mode == SyncMode::None {
            match wal.append(payload(i)).await {
                Ok(lsn) => {
                    failed_lsns.push((lsn, i));
                    wal.sync().await.map(|_| lsn)
                }
                Err(e) => Err(e),
            }
        } else {
            wal.append_batch([payload(i), payload(i + 1000)])
                .await
                .map(|l| l[0])
        };
        match r {
            Ok(lsn) if sync_mode == SyncMode::None => {
                // Synced: durable after all.
                failed_lsns.clear();
                acked.push((lsn, i));
            }
            Ok(lsn) => {
                acked.push((lsn, i));
                acked.push((lsn.next(), i + 1000));
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert!(io.fired(), "{fault:?} never fired");
    let err = err.unwrap_or_else(|| panic!("{fault:?}: no append failed"));
    let want = if fault == Fault::FailSync {
        EIO
    } else {
        ENOSPC
    };
    assert_eq!(os_error(&err), Some(want), "{fault:?}: {err}");
    // Poisoned: nothing more is acknowledged.
    let durable = wal.durable_lsn();
    let after = wal.append(payload(999)).await;
    assert!(matches!(after, Err(Error::Poisoned { .. })), "{after:?}");
    assert!(matches!(wal.sync().await, Err(Error::Poisoned { .. })));
    assert_eq!(wal.durable_lsn(), durable);
    wal.simulate_crash().await;

    let got = recover(tmp.path()).await;
    // Everything acknowledged, in order; at most the failed append besides
    // (written but not known durable), and never the one after it.
    assert_eq!(&got[..acked.len()], &acked[..], "{fault:?}");
    let extra: Vec<u32> = got[acked.len()..].iter().map(|(_, p)| *p).collect();
    assert!(
        !extra.contains(&999),
        "{fault:?}: an append after the fault landed"
    );
    assert!(
        extra.is_empty() || extra.len() == 2 || sync_mode == SyncMode::None,
        "{fault:?}: a batch was split: {extra:?}"
    );
    // Reopened, the log takes appends again.
    let (wal, _) = Wal::open(FsStore::new(tmp.path(), options()), WalOptions::default())
        .await
        .unwrap();
    wal.append(payload(7)).await.unwrap();
    wal.close().await.unwrap();
    assert!(
        !std::fs::read_dir(tmp.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "{fault:?}: a temporary segment was left behind"
    );
}

#[tokio::test]
async fn failing_fsync_poisons() {
    run(Fault::FailSync, SyncMode::EveryBatch).await;
}

#[tokio::test]
async fn short_write_poisons() {
    run(Fault::ShortWrite, SyncMode::EveryBatch).await;
}

#[tokio::test]
async fn enospc_on_write_poisons() {
    run(Fault::Enospc, SyncMode::EveryBatch).await;
}

#[tokio::test]
async fn enospc_on_segment_allocation_poisons() {
    run(Fault::EnospcAllocate, SyncMode::EveryBatch).await;
}

#[tokio::test]
async fn failing_fsync_in_explicit_sync_poisons() {
    run(Fault::FailSync, SyncMode::None).await;
}

/// A sync the Wal issues on its own (here on a byte budget) that fails is a
/// hole like any failed fdatasync: the Wal is poisoned with the I/O error,
/// the watermark stays where the last good sync left it, nothing more is
/// acknowledged, and what was below the watermark is recovered.
#[tokio::test]
async fn failing_background_sync_poisons() {
    let tmp = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyIo::default());
    let mode = SyncMode::EveryBytes(64);
    let store = FsStore::new(tmp.path(), options().sync_mode(mode)).with_file_io(io.clone());
    let (wal, _) = Wal::open(store, WalOptions::default()).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..8u32 {
        acked.push((wal.append(payload(i)).await.unwrap(), i));
    }
    // Every append crosses the 64-byte budget, so each is followed by a
    // background sync; the last one's watermark is at most one batch behind.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while wal.durable_lsn() < acked[7].0 {
        assert!(std::time::Instant::now() < deadline, "no background sync");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    io.arm(Fault::FailSync);
    let mut err = None;
    for i in 100..140u32 {
        match wal.append(payload(i)).await {
            Ok(_) => {}
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert!(io.fired(), "the failing sync never ran");
    let err = err.expect("no append failed after the background sync failed");
    assert!(matches!(err, Error::Poisoned { .. }), "{err:?}");
    assert_eq!(os_error(&err), Some(EIO), "{err}");
    assert_eq!(
        wal.durable_lsn(),
        acked[7].0,
        "the failed sync moved the watermark"
    );
    assert!(matches!(wal.sync().await, Err(Error::Poisoned { .. })));
    wal.simulate_crash().await;
    let got = recover(tmp.path()).await;
    assert_eq!(&got[..acked.len()], &acked[..]);
}

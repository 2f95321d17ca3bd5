//! The README's quickstart, runnable:
//! `cargo run --example quickstart -- /tmp/quickstart-wal`
use futures::StreamExt;
use wal::{
    fs::{FsOptions, FsStore},
    EntryKind, Wal, WalOptions,
};

#[tokio::main]
async fn main() -> wal::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/quickstart-wal".into());
    let store = FsStore::new(dir, FsOptions::default());
    let (wal, mut recovery) = Wal::open(store, WalOptions::default()).await?;

    // 1. Rebuild state: the last committed checkpoint, then the entries after it.
    let (mut snapshot, mut replayed) = (0, 0);
    while let Some(entry) = recovery.next().await {
        let entry = entry?;
        match entry.kind {
            EntryKind::Checkpoint => snapshot += 1, // load snapshot chunk entry.payload
            EntryKind::Data => replayed += 1,       // re-apply entry.payload
        }
    }
    println!("recovered {snapshot} checkpoint entries and {replayed} data entries");

    // 2. Log before you apply. `append` returns once the entry is durable.
    let lsn = wal.append(b"put a=1".to_vec()).await?;

    // Pipelining: `submit` hands back the Lsn at once and a completion future.
    let (_lsn, done) = wal.submit(b"put b=2".to_vec()).await?;
    done.await?;

    // Atomic: all or none of these survive a crash.
    wal.append_batch([b"debit x".to_vec(), b"credit y".to_vec()])
        .await?;

    // 3. Checkpoint now and then. Appends go on meanwhile; after the commit,
    //    everything below the begin marker is garbage and is removed.
    let mut cp = wal.begin_checkpoint().await?;
    cp.append(b"snapshot: a=1 b=2".to_vec()).await?;
    cp.commit().await?;

    println!(
        "appended up to lsn {}, durable up to {}",
        lsn,
        wal.durable_lsn()
    );
    wal.close().await?;
    Ok(())
}

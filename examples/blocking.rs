//! The Wal from plain threads, with no async runtime of the caller's own:
//! `cargo run --example blocking -- [DIR]`.

use wal::{
    blocking::BlockingWal,
    fs::{FsOptions, FsStore},
    WalOptions,
};

fn main() -> wal::Result<()> {
    let dir = std::env::args().nth(1).map_or_else(
        || std::env::temp_dir().join("wal-blocking-example"),
        Into::into,
    );
    let store = FsStore::new(&dir, FsOptions::default());
    let (wal, recovery) = BlockingWal::open(store, WalOptions::default())?;
    let mut recovered = 0;
    for entry in recovery {
        let _entry = entry?; // re-apply it
        recovered += 1;
    }
    std::thread::scope(|s| {
        for t in 0..4 {
            let wal = &wal;
            s.spawn(move || wal.append(format!("put t{t}=1")).map(drop));
        }
    });
    println!(
        "{}: recovered {recovered} entries, last lsn now {:?}",
        dir.display(),
        wal.last_lsn()
    );
    wal.close()
}

//! Durability choices and metrics, runnable:
//! `cargo run --example durability --features metrics -- /tmp/durability-wal`
//!
//! Opens a log in `SyncMode::Interval(5 ms)`: appends return once written,
//! the Wal syncs on its own within about 5 ms, `durable_lsn()` says how far,
//! and `wait_durable` forces it for one entry. A debugging recorder stands in
//! for Prometheus or StatsD and prints what the Wal reported.
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use wal::{
    fs::{FsOptions, FsStore, SyncMode},
    Wal, WalOptions,
};

#[tokio::main]
async fn main() -> wal::Result<()> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("no other recorder is installed");

    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/durability-wal".into());
    let options = FsOptions::default().sync_mode(SyncMode::Interval(Duration::from_millis(5)));
    let (wal, _recovery) = Wal::open(
        FsStore::new(dir, options),
        WalOptions::default().metrics_name("example"),
    )
    .await?;

    // Eight writers, 1000 appends each: each returns once written.
    let writers: Vec<tokio::task::JoinHandle<wal::Result<()>>> = (0..8)
        .map(|w| {
            let wal = wal.clone();
            tokio::spawn(async move {
                for i in 0..1000 {
                    wal.append(format!("writer {w} entry {i}")).await?;
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer task")?;
    }
    let last = wal.last_lsn().expect("entries were appended");
    println!(
        "written up to lsn {last}; durable up to {}",
        wal.durable_lsn()
    );
    wal.wait_durable(last).await?;
    println!("after wait_durable: durable up to {}", wal.durable_lsn());
    wal.close().await?;

    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let value = match value {
            DebugValue::Counter(n) => n.to_string(),
            DebugValue::Gauge(g) => g.to_string(),
            DebugValue::Histogram(h) => {
                let mut v: Vec<f64> = h.into_iter().map(|x| x.into_inner()).collect();
                v.sort_by(f64::total_cmp);
                match v.len() {
                    0 => "no samples".into(),
                    n => format!("{n} samples, median {:.6}, max {:.6}", v[n / 2], v[n - 1]),
                }
            }
        };
        println!("{} {{{}}} {value}", key.name(), labels.join(","));
    }
    Ok(())
}

//! DESIGN §9 etcd ratios, side by side against the same etcd. A benchmark,
//! not a timed test: `cargo test -p wal-etcd --test bench -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Instant;

use wal_core::{Wal, WalOptions};
use wal_etcd::{etcd_client, EtcdStore};

const PAYLOAD: usize = 128;

async fn raw_puts(eps: &[String], clients: usize, per_client: usize, tag: &str) -> f64 {
    let mut cs = Vec::new();
    for _ in 0..clients {
        cs.push(etcd_client::Client::connect(eps, None).await.unwrap());
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = cs
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            let tag = tag.to_string();
            tokio::spawn(async move {
                for i in 0..per_client {
                    client
                        .put(
                            format!("/bench-raw/{tag}/{c}/{i:08}"),
                            vec![7u8; PAYLOAD],
                            None,
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (clients * per_client) as f64 / t0.elapsed().as_secs_f64()
}

async fn wal_appends(eps: &[String], writers: usize, per_writer: usize) -> f64 {
    let prefix = format!("/{}/", support::unique("bench"));
    let (wal, _) = Wal::open(
        EtcdStore::new(support::options(eps, &prefix, "log")),
        WalOptions::default(),
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let wal = wal.clone();
            tokio::spawn(async move {
                for _ in 0..per_writer {
                    wal.append(vec![7u8; PAYLOAD]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (writers * per_writer) as f64 / t0.elapsed().as_secs_f64();
    wal.close().await.unwrap();
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn etcd_ratios() {
    let eps = support::shared_endpoints().await;
    let _ = raw_puts(&eps, 1, 50, "warmup").await;
    let raw1 = raw_puts(&eps, 1, 500, "seq").await;
    let wal1 = wal_appends(&eps, 1, 500).await;
    let raw64 = raw_puts(&eps, 64, 40, "par").await;
    let wal64 = wal_appends(&eps, 64, 40).await;
    println!(
        "{{\"raw_seq_puts_per_s\": {raw1:.0}, \"wal_1_writer_per_s\": {wal1:.0}, \"ratio_1\": {:.2}, \
         \"raw_64_clients_puts_per_s\": {raw64:.0}, \"wal_64_writers_per_s\": {wal64:.0}, \"ratio_64\": {:.2}}}",
        wal1 / raw1,
        wal64 / raw64
    );
}

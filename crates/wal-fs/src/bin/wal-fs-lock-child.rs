//! A writer process for the directory-lock test (`tests/regress_dir_lock.rs`).
//!
//! Usage: `wal-fs-lock-child <dir>`
//!
//! Opens the log in `<dir>` and prints one line: `READY` if it owns the log
//! (it then appends one entry and holds the log until its standard input
//! closes or yields a line), or `LOCKED <message>` if another owner holds
//! it (exit status 3). Any other failure: `ERROR <message>`, exit status 1.

use std::{io::BufRead, path::PathBuf, process::ExitCode};

use wal_core::{Error, Wal, WalOptions};
use wal_fs::{FsOptions, FsStore};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: wal-fs-lock-child <dir>");
        return ExitCode::from(2);
    };
    let wal = match Wal::open(
        FsStore::new(dir, FsOptions::default()),
        WalOptions::default(),
    )
    .await
    {
        Ok((wal, _)) => wal,
        Err(Error::Locked { holder }) => {
            println!("LOCKED {holder}");
            return ExitCode::from(3);
        }
        Err(e) => {
            println!("ERROR {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = wal.append(b"owner".to_vec()).await {
        println!("ERROR {e}");
        return ExitCode::from(1);
    }
    println!("READY");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    match wal.close().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("ERROR {e}");
            ExitCode::from(1)
        }
    }
}

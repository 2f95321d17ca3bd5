//! The okaywal peer: N threads, each writing one-chunk entries and
//! committing each one durably (`EntryWriter::commit`), okaywal's default
//! configuration.

use std::{io, path::Path, sync::Arc, time::Instant};

use anyhow::{anyhow, Context, Result};
use okaywal::{Entry, EntryId, LogManager, SegmentReader, WriteAheadLog};

use super::stats::{self, Row};

/// A log manager that keeps nothing: the benchmark only writes.
#[derive(Debug)]
struct Discard;

impl LogManager for Discard {
    fn recover(&mut self, _entry: &mut Entry<'_>) -> io::Result<()> {
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// Runs okaywal with `writers` threads.
pub fn run(
    dir: &Path,
    writers: usize,
    size: u64,
    count: Option<u64>,
    seconds: Option<f64>,
) -> Result<Row> {
    let path = dir.join("okaywal");
    let log = WriteAheadLog::recover(&path, Discard).context("opening okaywal")?;
    let payload: Arc<Vec<u8>> = Arc::new(vec![0x5au8; usize::try_from(size).context("size")?]);
    let start = Instant::now();
    let budget = Arc::new(stats::Budget::new(count, seconds));
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (log, payload, budget) = (log.clone(), payload.clone(), budget.clone());
            std::thread::spawn(move || -> Result<_> {
                let mut h = stats::histogram()?;
                while budget.take().is_some() {
                    let t = Instant::now();
                    let mut entry = log.begin_entry().context("okaywal begin_entry")?;
                    entry.write_chunk(&payload).context("okaywal write_chunk")?;
                    entry.commit().context("okaywal commit")?;
                    stats::record(&mut h, t.elapsed());
                }
                Ok(h)
            })
        })
        .collect();
    let mut total = stats::histogram()?;
    for handle in handles {
        let h = handle
            .join()
            .map_err(|_| anyhow!("an okaywal writer thread panicked"))??;
        total.add(&h).context("merging histograms")?;
    }
    let elapsed = start.elapsed();
    log.shutdown().context("closing okaywal")?;
    Ok(Row::new("okaywal", writers, size, elapsed, &total))
}

//! The checkpoint transaction.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::{record::lsn_payload, wal::Completion, Lsn, RecordKind, Result, Wal};

/// An open checkpoint, from [`Wal::begin_checkpoint`].
///
/// It covers every data entry with an Lsn below [`begin_lsn`](Self::begin_lsn).
/// Entries appended to it are durable once [`commit`](Self::commit) returns.
/// Dropping it without committing aborts it.
pub struct Checkpoint {
    wal: Wal,
    begin: Lsn,
    /// Completion of the last record queued for this checkpoint. Records
    /// complete in Lsn order and any failure poisons the Wal, so waiting on
    /// the last one is waiting on all of them.
    last: Option<Completion>,
    finished: bool,
}

impl Checkpoint {
    pub(crate) fn new(wal: Wal, begin: Lsn, done: Completion) -> Checkpoint {
        Checkpoint {
            wal,
            begin,
            last: Some(done),
            finished: false,
        }
    }

    /// The Lsn of the begin marker.
    pub fn begin_lsn(&self) -> Lsn {
        self.begin
    }

    /// Queues one entry of the checkpoint's state and returns its Lsn. Waits
    /// only for queue space, not for durability.
    pub async fn append(&mut self, payload: impl Into<Bytes>) -> Result<Lsn> {
        let payload = payload.into();
        self.wal.check_entry_size(&payload)?;
        let (lsn, _, done) = self
            .wal
            .enqueue(vec![(RecordKind::Checkpoint, payload)])
            .await?;
        self.last = Some(done);
        Ok(lsn)
    }

    /// Commits the checkpoint; returns the commit marker's Lsn once it and
    /// every entry of the checkpoint are durable. Records below the begin
    /// marker are then removed in the background.
    pub async fn commit(mut self) -> Result<Lsn> {
        self.finish(RecordKind::CheckpointCommit).await
    }

    /// Aborts the checkpoint: recovery will ignore it.
    pub async fn abort(mut self) -> Result<()> {
        self.finish(RecordKind::CheckpointAbort).await.map(drop)
    }

    async fn finish(&mut self, kind: RecordKind) -> Result<Lsn> {
        self.finished = true;
        let queued = self.queue_marker(kind);
        self.release();
        let (lsn, done) = queued?;
        if let Some(prev) = self.last.take() {
            drop(prev);
        }
        done.await?;
        Ok(lsn)
    }

    fn queue_marker(&self, kind: RecordKind) -> Result<(Lsn, Completion)> {
        let (lsn, _, done) = self
            .wal
            .enqueue_now(vec![(kind, lsn_payload(self.begin))], None)?;
        Ok((lsn, done))
    }

    fn release(&self) {
        self.wal
            .inner
            .checkpoint_open
            .store(false, Ordering::Release);
    }
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            // Best effort: if the Wal is closed or poisoned, the checkpoint
            // was never committed, which is what an abort means anyway.
            let _ = self.queue_marker(RecordKind::CheckpointAbort);
            self.release();
        }
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("begin", &self.begin)
            .finish()
    }
}

//! Reading committed records: shared by the owner ([`EtcdStore`](crate::EtcdStore))
//! and followers ([`EtcdReader`](crate::EtcdReader)).
//!
//! Only record keys at or below the head are read, so records of an append
//! that has not reached its commit point (or never will) are never seen.

use bytes::Bytes;
use etcd_client::{GetOptions, KeyValue, SortOrder, SortTarget};
use wal_core::{Error, Lsn, ReadLimit, Record, Result};

use crate::{
    client::Etcd,
    keys::{self, decode_record_value, KeyLayout, RecordValue},
    EtcdLimits,
};

/// The end (exclusive) of the committed record keys under `head`.
pub(crate) fn committed_end(keys: &KeyLayout, head: Lsn) -> Vec<u8> {
    if head == Lsn::MAX {
        keys.records_end()
    } else {
        keys.record(head.next())
    }
}

/// Reads committed records with Lsn >= `from` within `limit` (at least one
/// if any exists): the owner's read (it is the only writer, so `head` is
/// known). Every page and chunk of the pass is read at the revision of its
/// first page; a compaction between them restarts the pass where it was.
pub(crate) async fn read_committed(
    etcd: &Etcd,
    keys: &KeyLayout,
    limits: &EtcdLimits,
    from: Lsn,
    head: Lsn,
    limit: ReadLimit,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut restarts = 0;
    loop {
        let at = out.last().map_or(from, |r: &Record| r.lsn.next());
        match read_pass(etcd, keys, limits, at, head, 0, limit, false, &mut out).await {
            Err(e) if is_compacted(&e) && restarts < MAX_RESTARTS => restarts += 1,
            r => return r.map(|()| out),
        }
    }
}

/// A follower's read: reads the head, then every page and chunk of the
/// pass at the head's revision (never a torn chunked record, never a pack
/// half-rewritten by a truncate). A compaction of that revision restarts
/// the pass from where it was at a new head. If records from `from` on
/// were trimmed away before they were read (the first stored Lsn is above
/// `from`), fails with [`Error::Trimmed`] instead of skipping them;
/// `from == Lsn::ZERO` asks for whatever is stored and never fails so.
/// `first_head` is a head already read (and its revision), for the first pass.
pub(crate) async fn read_following(
    etcd: &Etcd,
    keys: &KeyLayout,
    limits: &EtcdLimits,
    from: Lsn,
    first_head: Option<(Lsn, i64)>,
    limit: ReadLimit,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut restarts = 0;
    let mut known = first_head;
    loop {
        let (head, revision) = match known.take() {
            Some(h) => h,
            None => read_head(etcd, keys).await?,
        };
        let at = out.last().map_or(from, |r: &Record| r.lsn.next());
        let r = read_pass(
            etcd, keys, limits, at, head, revision, limit, true, &mut out,
        )
        .await;
        match r {
            Err(e) if is_compacted(&e) && restarts < MAX_RESTARTS => restarts += 1,
            // What was read before the trim is good; the next read reports it.
            Err(Error::Trimmed { .. }) if !out.is_empty() => return Ok(out),
            r => return r.map(|()| out),
        }
    }
}

/// Passes restarted after compactions before the error is returned. Each
/// restart keeps what was read, so this only bounds a cluster compacted
/// faster than one page can be read.
const MAX_RESTARTS: u32 = 16;

/// etcd's "required revision has been compacted" (ErrCompacted).
pub(crate) fn is_compacted(e: &Error) -> bool {
    matches!(e, Error::Unavailable(m) if m.contains("required revision has been compacted"))
}

/// The head (last committed Lsn, [`Lsn::ZERO`] for an empty log) and the
/// etcd revision it was read at.
pub(crate) async fn read_head(etcd: &Etcd, keys: &KeyLayout) -> Result<(Lsn, i64)> {
    let resp = etcd.get("read head", keys.head(), None).await?;
    let rev = resp.header().map_or(0, |h| h.revision());
    match resp.kvs().first() {
        Some(kv) => Ok((keys::decode_head(kv.key(), kv.value())?, rev)),
        None => Ok((Lsn::ZERO, rev)),
    }
}

/// One pass: appends to `out` the committed records with Lsn >= `from`
/// (up to `head`) until `limit` is reached, reading everything at
/// `revision` (0: at the revision of the pass's first page). With
/// `check_trimmed`, fails with [`Error::Trimmed`] if the first stored
/// record at that revision is above `from` (and `from` is not ZERO).
#[allow(clippy::too_many_arguments)]
async fn read_pass(
    etcd: &Etcd,
    keys: &KeyLayout,
    limits: &EtcdLimits,
    from: Lsn,
    head: Lsn,
    mut revision: i64,
    limit: ReadLimit,
    check_trimmed: bool,
    out: &mut Vec<Record>,
) -> Result<()> {
    if from > head || head == Lsn::ZERO {
        return Ok(());
    }
    let end = committed_end(keys, head);
    let page = (limits.read_bytes / limits.pack_bytes.max(1))
        .clamp(1, 1024)
        .min(limit.max_records.max(1)) as i64;
    let mut start = Some(keys.record(from));
    let mut bytes: usize = out.iter().map(|r| r.payload.len()).sum();
    let full = |out: &Vec<Record>, bytes: usize| {
        out.len() >= limit.max_records || (!out.is_empty() && bytes >= limit.max_bytes)
    };
    let mut first_page = true;
    while let Some(from_key) = start.take() {
        let (kvs, next, rev) =
            range_page_at(etcd, "read records", from_key, &end, page, revision).await?;
        revision = rev;
        start = next;
        let mut values = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let (key, value) = kv.into_key_value();
            let key_lsn = keys.parse_record(&key)?;
            let value = decode_record_value(&key, key_lsn, &Bytes::from(value))?;
            values.push((key, value));
        }
        if std::mem::take(&mut first_page) && check_trimmed && from > Lsn::ZERO {
            let lowest = values.first().map(|(_, v)| match v {
                RecordValue::Pack(rs) => rs.first().map_or(Lsn::MAX, |r| r.lsn),
                RecordValue::Chunked(d) => d.lsn,
            });
            if lowest.is_none_or(|l| l > from) {
                let first = first_lsn_at(etcd, keys, head, revision).await?;
                if first.is_none_or(|f| f > from) {
                    return Err(Error::Trimmed {
                        requested: from,
                        first: first.unwrap_or_else(|| head.next()),
                    });
                }
            }
        }
        for (key, value) in values {
            match value {
                RecordValue::Pack(records) => {
                    for r in records {
                        if r.lsn < from {
                            continue;
                        }
                        bytes += r.payload.len();
                        out.push(r);
                        if full(out, bytes) {
                            return Ok(());
                        }
                    }
                }
                RecordValue::Chunked(d) => {
                    let (r, _) = read_chunks(etcd, keys, limits, &key, &d, revision).await?;
                    bytes += r.payload.len();
                    out.push(r);
                    if full(out, bytes) {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}

/// One page of the key range `[start, end)` (at `revision`; 0 is the
/// latest): its key-values, and the key the next page starts at, `None` once
/// the range is exhausted.
pub(crate) async fn range_page(
    etcd: &Etcd,
    what: &'static str,
    start: Vec<u8>,
    end: &[u8],
    limit: i64,
    revision: i64,
) -> Result<(Vec<KeyValue>, Option<Vec<u8>>)> {
    range_page_at(etcd, what, start, end, limit, revision)
        .await
        .map(|(kvs, next, _)| (kvs, next))
}

/// [`range_page`], also returning the revision the page was read at (the
/// one asked for, or the latest if 0). Every paged range read goes through
/// here.
async fn range_page_at(
    etcd: &Etcd,
    what: &'static str,
    start: Vec<u8>,
    end: &[u8],
    limit: i64,
    revision: i64,
) -> Result<(Vec<KeyValue>, Option<Vec<u8>>, i64)> {
    let options = GetOptions::new()
        .with_range(end.to_vec())
        .with_limit(limit)
        .with_revision(revision);
    let mut resp = etcd.get(what, start, Some(options)).await?;
    let at = if revision > 0 {
        revision
    } else {
        resp.header().map_or(0, |h| h.revision())
    };
    let more = resp.more();
    let kvs = resp.take_kvs();
    let next = match kvs.last() {
        Some(kv) if more => {
            let mut next = kv.key().to_vec();
            next.push(0);
            Some(next)
        }
        _ => None,
    };
    Ok((kvs, next, at))
}

/// Fetches the chunk keys of chunked record `d` (at `revision`; 0 is the
/// latest) and reassembles the payload; also returns how many chunk keys
/// were read.
pub(crate) async fn read_chunks(
    etcd: &Etcd,
    keys: &KeyLayout,
    limits: &EtcdLimits,
    key: &[u8],
    d: &keys::Descriptor,
    revision: i64,
) -> Result<(Record, u64)> {
    let (first, end) = keys.chunks_of(d.lsn);
    let page = (limits.read_bytes / limits.chunk_bytes.max(1)).clamp(1, 1024) as i64;
    let mut chunks = Vec::with_capacity(d.chunks as usize);
    let mut start = Some(first);
    while let Some(from_key) = start.take() {
        let (kvs, next) = range_page(etcd, "read chunks", from_key, &end, page, revision).await?;
        start = next;
        chunks.extend(kvs.into_iter().map(|kv| Bytes::from(kv.into_key_value().1)));
    }
    let n = chunks.len() as u64;
    Ok((keys::assemble_chunks(key, d, chunks)?, n))
}

/// The first committed record's Lsn, if any.
pub(crate) async fn first_lsn(etcd: &Etcd, keys: &KeyLayout, head: Lsn) -> Result<Option<Lsn>> {
    first_lsn_at(etcd, keys, head, 0).await
}

/// The first committed record's Lsn at `revision` (0: the latest), if any.
async fn first_lsn_at(
    etcd: &Etcd,
    keys: &KeyLayout,
    head: Lsn,
    revision: i64,
) -> Result<Option<Lsn>> {
    if head == Lsn::ZERO {
        return Ok(None);
    }
    let mut resp = etcd
        .get(
            "read first record",
            keys.records_start(),
            Some(
                GetOptions::new()
                    .with_range(committed_end(keys, head))
                    .with_limit(1)
                    .with_revision(revision),
            ),
        )
        .await?;
    let Some(kv) = resp.take_kvs().into_iter().next() else {
        return Ok(None);
    };
    let (key, value) = kv.into_key_value();
    let key_lsn = keys.parse_record(&key)?;
    Ok(
        match decode_record_value(&key, key_lsn, &Bytes::from(value))? {
            RecordValue::Pack(records) => records.first().map(|r| r.lsn),
            RecordValue::Chunked(d) => Some(d.lsn),
        },
    )
}

/// The last committed record's Lsn (at or below `head`), if any.
pub(crate) async fn last_lsn(etcd: &Etcd, keys: &KeyLayout, below: Vec<u8>) -> Result<Option<Lsn>> {
    let resp = etcd
        .get(
            "read last record",
            keys.records_start(),
            Some(
                GetOptions::new()
                    .with_range(below)
                    .with_sort(SortTarget::Key, SortOrder::Descend)
                    .with_keys_only()
                    .with_limit(1),
            ),
        )
        .await?;
    match resp.kvs().first() {
        Some(kv) => Ok(Some(keys.parse_record(kv.key())?)),
        None => Ok(None),
    }
}

//! Reading committed records: shared by the owner ([`EtcdStore`](crate::EtcdStore))
//! and followers ([`EtcdReader`](crate::EtcdReader)).
//!
//! Only record keys at or below the head are read, so records of an append
//! that has not reached its commit point (or never will) are never seen.

use bytes::Bytes;
use etcd_client::{GetOptions, KeyValue, SortOrder, SortTarget};
use wal_core::{Lsn, ReadLimit, Record, Result};

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
/// if any exists).
pub(crate) async fn read_committed(
    etcd: &Etcd,
    keys: &KeyLayout,
    limits: &EtcdLimits,
    from: Lsn,
    head: Lsn,
    limit: ReadLimit,
) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    if from > head || head == Lsn::ZERO {
        return Ok(out);
    }
    let end = committed_end(keys, head);
    let page = (limits.read_bytes / limits.pack_bytes.max(1))
        .clamp(1, 1024)
        .min(limit.max_records.max(1)) as i64;
    let mut start = Some(keys.record(from));
    let mut bytes = 0usize;
    let full = |out: &Vec<Record>, bytes: usize| {
        out.len() >= limit.max_records || (!out.is_empty() && bytes >= limit.max_bytes)
    };
    while let Some(from_key) = start.take() {
        let (kvs, next) = range_page(etcd, "read records", from_key, &end, page, 0).await?;
        start = next;
        for kv in kvs {
            let (key, value) = kv.into_key_value();
            let key_lsn = keys.parse_record(&key)?;
            match decode_record_value(&key, key_lsn, &Bytes::from(value))? {
                RecordValue::Pack(records) => {
                    for r in records {
                        if r.lsn < from {
                            continue;
                        }
                        bytes += r.payload.len();
                        out.push(r);
                        if full(&out, bytes) {
                            return Ok(out);
                        }
                    }
                }
                RecordValue::Chunked(d) => {
                    let r = read_chunked(etcd, keys, limits, &key, &d).await?;
                    bytes += r.payload.len();
                    out.push(r);
                    if full(&out, bytes) {
                        return Ok(out);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One page of the key range `[start, end)` (at `revision`; 0 is the
/// latest): its key-values, and the key the next page starts at, `None` once
/// the range is exhausted. Every paged range read goes through here.
pub(crate) async fn range_page(
    etcd: &Etcd,
    what: &'static str,
    start: Vec<u8>,
    end: &[u8],
    limit: i64,
    revision: i64,
) -> Result<(Vec<KeyValue>, Option<Vec<u8>>)> {
    let options = GetOptions::new()
        .with_range(end.to_vec())
        .with_limit(limit)
        .with_revision(revision);
    let mut resp = etcd.get(what, start, Some(options)).await?;
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
    Ok((kvs, next))
}

/// Fetches and reassembles the chunks of one chunked record.
async fn read_chunked(
    etcd: &Etcd,
    keys: &KeyLayout,
    limits: &EtcdLimits,
    key: &[u8],
    d: &keys::Descriptor,
) -> Result<Record> {
    read_chunks(etcd, keys, limits, key, d, 0)
        .await
        .map(|(record, _)| record)
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
                    .with_limit(1),
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

//! Reading committed records: shared by the owner ([`EtcdStore`](crate::EtcdStore))
//! and followers ([`EtcdReader`](crate::EtcdReader)).
//!
//! Only record keys at or below the head are read, so records of an append
//! that has not reached its commit point (or never will) are never seen.

use bytes::Bytes;
use etcd_client::{GetOptions, SortOrder, SortTarget};
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
    let mut start = keys.record(from);
    let mut bytes = 0usize;
    let full = |out: &Vec<Record>, bytes: usize| {
        out.len() >= limit.max_records || (!out.is_empty() && bytes >= limit.max_bytes)
    };
    loop {
        let mut resp = etcd
            .get(
                "read records",
                start.clone(),
                Some(GetOptions::new().with_range(end.clone()).with_limit(page)),
            )
            .await?;
        let more = resp.more();
        let kvs = resp.take_kvs();
        let Some(last_key) = kvs.last().map(|kv| kv.key().to_vec()) else {
            break;
        };
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
        if !more {
            break;
        }
        start = last_key;
        start.push(0);
    }
    Ok(out)
}

/// Fetches and reassembles the chunks of one chunked record.
async fn read_chunked(
    etcd: &Etcd,
    keys: &KeyLayout,
    limits: &EtcdLimits,
    key: &[u8],
    d: &keys::Descriptor,
) -> Result<Record> {
    let (mut start, end) = keys.chunks_of(d.lsn);
    let page = (limits.read_bytes / limits.chunk_bytes.max(1)).clamp(1, 1024) as i64;
    let mut chunks = Vec::with_capacity(d.chunks as usize);
    loop {
        let mut resp = etcd
            .get(
                "read chunks",
                start.clone(),
                Some(GetOptions::new().with_range(end.clone()).with_limit(page)),
            )
            .await?;
        let more = resp.more();
        let kvs = resp.take_kvs();
        let Some(last_key) = kvs.last().map(|kv| kv.key().to_vec()) else {
            break;
        };
        for kv in kvs {
            let (_, value) = kv.into_key_value();
            chunks.push(Bytes::from(value));
        }
        if !more {
            break;
        }
        start = last_key;
        start.push(0);
    }
    keys::assemble_chunks(key, d, chunks)
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

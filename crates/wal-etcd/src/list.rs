//! [`list_logs`]: the logs under a prefix, for operators.

use std::collections::BTreeMap;

use etcd_client::{Client, GetOptions, SortOrder, SortTarget};
use wal_core::{Lsn, Result};

use crate::{
    client::Etcd,
    keys::{decode_head, KeyLayout},
    EtcdOptions, OwnerInfo,
};

/// Keys per page of the key scan.
const PAGE: i64 = 10_000;

/// One log found under a prefix by [`list_logs`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogSummary {
    /// The log's name (its keys are `{prefix}{name}/...`).
    pub name: String,
    /// The last committed Lsn ([`Lsn::ZERO`] if the log has no head key:
    /// nothing committed yet).
    pub head: Lsn,
    /// The owner, if the log is claimed.
    pub owner: Option<OwnerInfo>,
    /// Record keys (`r/...`: packs and chunk descriptors).
    pub record_keys: u64,
    /// Chunk keys (`c/...`).
    pub chunk_keys: u64,
    /// Every key of the log (records, chunks, head, owner).
    pub keys: u64,
}

/// Every log under `options.prefix` (`options.name` is not used), in name
/// order, read at one etcd revision: a keys-only scan of the prefix (in
/// pages of 10 000 keys; no values, so its cost is the key count, not the
/// data size), then the head and owner keys of each log. A name counts as a
/// log if it has a head or an owner key; other keys under the prefix are
/// not counted. Read-only, and needs no ownership.
pub async fn list_logs(options: &EtcdOptions) -> Result<Vec<LogSummary>> {
    options.validate()?;
    let etcd = Etcd::connect(options).await?;
    list(&etcd, &options.prefix).await
}

/// [`list_logs`] on an existing client.
pub async fn list_logs_with_client(
    client: Client,
    options: &EtcdOptions,
) -> Result<Vec<LogSummary>> {
    list(
        &Etcd::from_client(client, options.request_timeout),
        &options.prefix,
    )
    .await
}

#[derive(Default)]
struct Counts {
    head: bool,
    owner: bool,
    record_keys: u64,
    chunk_keys: u64,
}

async fn list(etcd: &Etcd, prefix: &str) -> Result<Vec<LogSummary>> {
    let end = prefix_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut logs: BTreeMap<String, Counts> = BTreeMap::new();
    loop {
        let mut opts = GetOptions::new()
            .with_range(end.clone())
            .with_keys_only()
            .with_limit(PAGE)
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        let resp = etcd.get("list logs", from.clone(), Some(opts)).await?;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        for kv in resp.kvs() {
            let Some(rest) = kv.key().strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            let Some(slash) = rest.iter().position(|b| *b == b'/') else {
                continue;
            };
            let (Ok(name), suffix) = (std::str::from_utf8(&rest[..slash]), &rest[slash + 1..])
            else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            let c = logs.entry(name.to_string()).or_default();
            match suffix {
                b"head" => c.head = true,
                b"owner" => c.owner = true,
                s if s.starts_with(b"r/") => c.record_keys += 1,
                s if s.starts_with(b"c/") => c.chunk_keys += 1,
                _ => {}
            }
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    let mut out = Vec::new();
    for (name, c) in logs {
        if !(c.head || c.owner) {
            continue;
        }
        let Ok(keys) = KeyLayout::new(prefix, &name) else {
            continue;
        };
        // `head` and `owner` are adjacent in key order: one range.
        let mut owner_end = keys.owner();
        owner_end.push(0);
        let resp = etcd
            .get(
                "read head and owner",
                keys.head(),
                Some(
                    GetOptions::new()
                        .with_range(owner_end)
                        .with_revision(revision),
                ),
            )
            .await?;
        let mut head = Lsn::ZERO;
        let mut owner = None;
        for kv in resp.kvs() {
            if kv.key() == keys.head().as_slice() {
                head = decode_head(kv.key(), kv.value())?;
            } else if kv.key() == keys.owner().as_slice() {
                owner = Some(OwnerInfo::from_kv(kv));
            }
        }
        out.push(LogSummary {
            name,
            head,
            owner,
            record_keys: c.record_keys,
            chunk_keys: c.chunk_keys,
            keys: c.record_keys + c.chunk_keys + u64::from(c.head) + u64::from(c.owner),
        });
    }
    Ok(out)
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the key space.
    vec![0]
}

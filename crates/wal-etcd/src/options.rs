//! Connection, ownership and size options.

use std::{fmt, time::Duration};

use wal_core::Error;

/// What [`EtcdStore::open`](crate::EtcdStore) does when another writer owns
/// the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// Fail at once with [`Error::Locked`] naming the holder. The default.
    FailFast,
    /// Wait up to this long for the owner's lease to lapse (or for it to
    /// close), then take over. Fails with [`Error::Locked`] after the wait.
    Wait(Duration),
}

/// Size limits. etcd refuses requests above `--max-request-bytes` (default
/// 1.5 MiB) and txns with more than `--max-txn-ops` operations (default 128);
/// set these to match your cluster. Every field documents its default and
/// unit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EtcdLimits {
    /// The cluster's `--max-request-bytes`. Every txn this store sends stays
    /// below it, overhead included. Default: 1.5 MiB (1_572_864 bytes).
    pub max_request_bytes: usize,
    /// The cluster's `--max-txn-ops`. Default: 128.
    pub max_txn_ops: usize,
    /// Records are packed several to a key up to this many value bytes;
    /// a record whose packed form would exceed it alone is stored chunked.
    /// Default: 64 KiB.
    pub pack_bytes: usize,
    /// Payload bytes per chunk key of a chunked record. Default: 1 MiB.
    pub chunk_bytes: usize,
    /// The largest payload of one record ([`WalStore::max_payload_bytes`](wal_core::WalStore::max_payload_bytes)).
    /// Default: 16 MiB; at most 4 GiB - 1.
    pub max_payload_bytes: usize,
    /// The largest total payload of one append (an atomic batch may need
    /// several txns; the head key makes it all-or-nothing). Default: 64 MiB.
    pub max_append_bytes: usize,
    /// Reads ask for at most this many response bytes at a time (estimated
    /// from `pack_bytes` and `chunk_bytes`). Default: 4 MiB.
    pub read_bytes: usize,
}

/// Bytes reserved in every txn for the compares, the request header and
/// protobuf framing.
pub(crate) const TXN_FIXED_OVERHEAD: usize = 4096;
/// Protobuf framing of one put op besides its key and value.
pub(crate) const OP_OVERHEAD: usize = 32;

impl Default for EtcdLimits {
    fn default() -> Self {
        EtcdLimits {
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            pack_bytes: 64 * 1024,
            chunk_bytes: 1024 * 1024,
            max_payload_bytes: 16 << 20,
            max_append_bytes: 64 << 20,
            read_bytes: 4 << 20,
        }
    }
}

impl EtcdLimits {
    /// The largest payload stored inline in a pack; larger ones are chunked.
    pub fn chunk_threshold(&self) -> usize {
        self.pack_bytes
            .saturating_sub(crate::keys::PACK_FRAME + crate::keys::PACK_ENTRY_HEADER)
    }

    /// Bytes of keys and values one txn may carry.
    pub(crate) fn txn_budget(&self) -> usize {
        self.max_request_bytes.saturating_sub(TXN_FIXED_OVERHEAD)
    }

    pub(crate) fn validate(&self, key_len: usize) -> Result<(), Error> {
        let per_op = key_len + OP_OVERHEAD;
        let bad = |why: String| Err(Error::InvalidArgument(format!("etcd limits: {why}")));
        if self.max_txn_ops < 2 {
            return bad(format!("max_txn_ops {} < 2", self.max_txn_ops));
        }
        if self.pack_bytes < 64 {
            return bad(format!("pack_bytes {} < 64", self.pack_bytes));
        }
        if self.chunk_bytes == 0 {
            return bad("chunk_bytes is 0".into());
        }
        // The largest op plus the head put must fit one txn.
        let largest = self.pack_bytes.max(self.chunk_bytes) + per_op;
        let head = per_op + crate::keys::HEAD_LEN;
        if largest + head > self.txn_budget() {
            return bad(format!(
                "a {}-byte value does not fit a txn under max_request_bytes {}",
                self.pack_bytes.max(self.chunk_bytes),
                self.max_request_bytes
            ));
        }
        if self.max_payload_bytes > u32::MAX as usize {
            return bad(format!(
                "max_payload_bytes {} above 4 GiB - 1",
                self.max_payload_bytes
            ));
        }
        Ok(())
    }
}

/// Options of an [`EtcdStore`](crate::EtcdStore) or
/// [`EtcdReader`](crate::EtcdReader). Credentials are redacted from `Debug`.
///
/// ```
/// use std::time::Duration;
/// use wal_etcd::{Acquire, EtcdOptions};
///
/// let options = EtcdOptions::new(["http://127.0.0.1:2379"], "orders")
///     .prefix("/myapp/wal/")
///     .lease_ttl(Duration::from_secs(10))
///     .acquire(Acquire::Wait(Duration::from_secs(30)))
///     .user("wal", "s3cret");
/// assert!(!format!("{options:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct EtcdOptions {
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`. No default.
    pub endpoints: Vec<String>,
    /// Key prefix under which logs live. Default: `/wal/`.
    pub prefix: String,
    /// The log's name (no `/`). Its keys are `{prefix}{name}/...`.
    pub name: String,
    /// Who this writer is, stored in the owner key and reported to other
    /// openers in [`Error::Locked`]. Default: `{hostname}-{pid}-{random}`.
    pub writer_id: String,
    /// Lease TTL of the owner key. Default: 10 s; at least 2 s (etcd's
    /// minimum), whole seconds.
    pub lease_ttl: Duration,
    /// What to do when another writer owns the log. Default: [`Acquire::FailFast`].
    pub acquire: Acquire,
    /// Deadline of each unary etcd request (txn, get, grant, revoke).
    /// Default: 5 s.
    pub request_timeout: Duration,
    /// Deadline of establishing a connection. Default: 3 s.
    pub connect_timeout: Duration,
    /// Requests fail fast when the member has no leader (instead of
    /// hanging until the request timeout). Default: true.
    pub require_leader: bool,
    /// Size limits. Default: [`EtcdLimits::default`].
    pub limits: EtcdLimits,
    /// How often [`EtcdReader::tail`](crate::EtcdReader::tail) re-reads the
    /// head even without a watch event (a safety net for a broken watch).
    /// Default: 2 s.
    pub tail_poll: Duration,
    user: Option<(String, String)>,
    #[cfg(feature = "tls")]
    tls: Option<crate::EtcdTls>,
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("EtcdOptions");
        let endpoints: Vec<String> = self.endpoints.iter().map(|e| redact_endpoint(e)).collect();
        d.field("endpoints", &endpoints)
            .field("prefix", &self.prefix)
            .field("name", &self.name)
            .field("writer_id", &self.writer_id)
            .field("lease_ttl", &self.lease_ttl)
            .field("acquire", &self.acquire)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("require_leader", &self.require_leader)
            .field("limits", &self.limits)
            .field(
                "user",
                &self
                    .user
                    .as_ref()
                    .map(|(name, _)| format!("{name}:<redacted>")),
            );
        // EtcdTls' Debug counts certificates and never shows the key.
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls);
        d.finish()
    }
}

impl EtcdOptions {
    /// Options for the log `name` on the cluster at `endpoints`, with every
    /// other field at its default.
    pub fn new<I, S>(endpoints: I, name: impl Into<String>) -> EtcdOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/wal/".into(),
            name: name.into(),
            writer_id: default_writer_id(),
            lease_ttl: Duration::from_secs(10),
            acquire: Acquire::FailFast,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            require_leader: true,
            limits: EtcdLimits::default(),
            tail_poll: Duration::from_secs(2),
            user: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Sets [`name`](Self::name): the same options for another log.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// Sets [`prefix`](Self::prefix).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// Sets [`writer_id`](Self::writer_id).
    pub fn writer_id(mut self, id: impl Into<String>) -> Self {
        self.writer_id = id.into();
        self
    }
    /// Sets [`lease_ttl`](Self::lease_ttl).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }
    /// Sets [`acquire`](Self::acquire).
    pub fn acquire(mut self, acquire: Acquire) -> Self {
        self.acquire = acquire;
        self
    }
    /// Sets [`request_timeout`](Self::request_timeout).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }
    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }
    /// Sets [`require_leader`](Self::require_leader).
    pub fn require_leader(mut self, on: bool) -> Self {
        self.require_leader = on;
        self
    }
    /// Sets [`limits`](Self::limits).
    pub fn limits(mut self, limits: EtcdLimits) -> Self {
        self.limits = limits;
        self
    }
    /// Sets [`tail_poll`](Self::tail_poll).
    pub fn tail_poll(mut self, t: Duration) -> Self {
        self.tail_poll = t;
        self
    }
    /// Authenticates as `name` with `password`. Never logged or printed.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }
    /// Connects with TLS: `https://` endpoints, servers' certificates
    /// checked against the CA of `tls`, and its client certificate
    /// presented to clusters that require one. The key is never printed.
    /// Connecting checks the handshake once, so that an untrusted server
    /// certificate or a refused client certificate fails with
    /// [`Error::Tls`] (see [`EtcdTls`](crate::EtcdTls)).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings, if any.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_settings(&self) -> Option<&crate::EtcdTls> {
        self.tls.as_ref()
    }

    /// The lease TTL in whole seconds, validated.
    pub(crate) fn ttl_secs(&self) -> Result<i64, Error> {
        let secs = self.lease_ttl.as_secs();
        if secs < 2 || self.lease_ttl.subsec_nanos() != 0 {
            return Err(Error::InvalidArgument(format!(
                "lease_ttl {:?} must be whole seconds and at least 2 s (etcd's minimum)",
                self.lease_ttl
            )));
        }
        i64::try_from(secs)
            .map_err(|_| Error::InvalidArgument(format!("lease_ttl {secs}s too large")))
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.endpoints.is_empty() {
            return Err(Error::InvalidArgument("no etcd endpoints".into()));
        }
        if self.writer_id.is_empty() {
            return Err(Error::InvalidArgument("empty writer_id".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::InvalidArgument("request_timeout is zero".into()));
        }
        self.ttl_secs()?;
        self.validate_tls()
    }

    /// TLS set with `https://` endpoints (or none with a scheme), or no TLS
    /// and no `https://` endpoint; and the PEM parses.
    fn validate_tls(&self) -> Result<(), Error> {
        #[cfg(feature = "tls")]
        let tls = self.tls.as_ref();
        #[cfg(not(feature = "tls"))]
        let tls: Option<()> = None;
        for e in &self.endpoints {
            let e = e.trim();
            if tls.is_some() && e.starts_with("http://") {
                return Err(Error::InvalidArgument(format!(
                    "etcd endpoint {}: TLS is configured, so endpoints must be https://",
                    redact_endpoint(e)
                )));
            }
            if tls.is_none() && e.starts_with("https://") {
                let fix = if cfg!(feature = "tls") {
                    "set EtcdOptions::tls with the CA that signed the server's certificate"
                } else {
                    "this build has no TLS (wal-etcd's feature `tls`)"
                };
                return Err(Error::InvalidArgument(format!(
                    "etcd endpoint {}: https:// needs TLS settings: {fix}",
                    redact_endpoint(e)
                )));
            }
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = tls {
            tls.validate()?;
        }
        Ok(())
    }

    /// The etcd-client connect options these options imply.
    pub(crate) fn connect_options(&self) -> etcd_client::ConnectOptions {
        let mut o = etcd_client::ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            .with_require_leader(self.require_leader);
        if let Some((name, password)) = &self.user {
            // etcd forgets a token after `--auth-token-ttl` of disuse and on
            // restart: re-authenticate and retry the refused request (it was
            // not applied) instead of failing with "invalid auth token".
            o = o
                .with_user(name.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            o = o.with_tls(tls.tls_options());
        }
        o
    }
}

/// `endpoint` with any `user:password@` of its authority replaced, for
/// printing.
pub(crate) fn redact_endpoint(endpoint: &str) -> String {
    let start = endpoint.find("://").map_or(0, |i| i + 3);
    let end = endpoint[start..]
        .find(['/', '?', '#'])
        .map_or(endpoint.len(), |i| start + i);
    match endpoint[start..end].rfind('@') {
        Some(at) => format!(
            "{}<redacted>@{}",
            &endpoint[..start],
            &endpoint[start + at + 1..]
        ),
        None => endpoint.to_string(),
    }
}

fn default_writer_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        nanos ^ seq.rotate_left(20)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Neither the password of `user` nor one embedded in an endpoint's
    /// `user:password@` shows in `Debug` of the options or of a store.
    #[test]
    fn debug_prints_no_secret() {
        let o = EtcdOptions::new(
            ["http://wal:ep-s3cret@127.0.0.1:2379/", "127.0.0.1:2380"],
            "log",
        )
        .user("wal", "user-s3cret");
        for text in [
            format!("{o:?}"),
            format!("{o:#?}"),
            format!("{:?}", crate::EtcdStore::new(o.clone())),
        ] {
            assert!(!text.contains("s3cret"), "secret in {text}");
            assert!(text.contains("127.0.0.1:2379"), "endpoint lost: {text}");
            assert!(text.contains("127.0.0.1:2380"), "endpoint lost: {text}");
        }
    }
}

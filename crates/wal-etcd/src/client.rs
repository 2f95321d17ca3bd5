//! The etcd connection: one client, and every unary call bounded by the
//! request timeout.

use std::time::Duration;

use etcd_client::{Client, GetOptions, GetResponse, KvClient, Txn, TxnResponse};

use crate::{
    error::{call, Failure},
    EtcdOptions,
};

/// Responses may carry several packs or chunks; reads bound them by
/// `EtcdLimits::read_bytes`, this is only tonic's hard cap.
const MAX_DECODING_BYTES: usize = 256 << 20;

/// A connected etcd client plus the deadline of each request.
#[derive(Clone)]
pub(crate) struct Etcd {
    pub client: Client,
    kv: KvClient,
    pub timeout: Duration,
}

impl Etcd {
    /// Connects (lazily: an unreachable cluster shows up at the first call,
    /// unless credentials force an authentication round trip now). With
    /// TLS, one handshake per endpoint first, so that a TLS failure is
    /// reported as such (see `tls`).
    pub(crate) async fn connect(options: &EtcdOptions) -> Result<Etcd, Failure> {
        #[cfg(feature = "tls")]
        if let Some(tls) = options.tls_settings() {
            crate::tls::check_handshake(&options.endpoints, tls, options.connect_timeout)
                .await
                .map_err(Failure::from_error)?;
        }
        let client = call(
            "connect",
            options.connect_timeout + options.request_timeout,
            Client::connect(options.endpoints.clone(), Some(options.connect_options())),
        )
        .await?;
        Ok(Etcd::from_client(client, options.request_timeout))
    }

    /// Wraps an existing client.
    pub(crate) fn from_client(client: Client, timeout: Duration) -> Etcd {
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_DECODING_BYTES);
        Etcd {
            client,
            kv,
            timeout,
        }
    }

    pub(crate) async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse, Failure> {
        let mut kv = self.kv.clone();
        call(what, self.timeout, kv.txn(txn)).await
    }

    pub(crate) async fn get(
        &self,
        what: &str,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, Failure> {
        let mut kv = self.kv.clone();
        call(what, self.timeout, kv.get(key, options)).await
    }

    pub(crate) async fn grant(&self, ttl: i64) -> Result<i64, Failure> {
        let mut lease = self.client.lease_client();
        let r = call("lease grant", self.timeout, lease.grant(ttl, None)).await?;
        Ok(r.id())
    }

    pub(crate) async fn revoke(&self, id: i64) -> Result<(), Failure> {
        let mut lease = self.client.lease_client();
        call("lease revoke", self.timeout, lease.revoke(id))
            .await
            .map(|_| ())
    }
}

//! Mapping etcd failures onto [`wal_core::Error`], and bounding every call
//! with a deadline.

use std::{future::Future, io, time::Duration};

use wal_core::Error;

/// A failed etcd request: what to report, and whether the request is known
/// not to have been applied (etcd refused it up front) or its outcome is
/// unknown (a timeout, a dropped connection, NOSPACE).
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: Error,
    /// The request certainly was not applied.
    pub outcome_known: bool,
    /// Not applied, and worth sending again: no leader, too many requests,
    /// a connection refused before the request was sent.
    pub retryable: bool,
    /// etcd answered "database space exceeded". The txn that crosses the
    /// quota is applied and still gets this answer, so it is not proof of
    /// "not applied" for a txn with a put; but the request is finished: it
    /// cannot land later, so a read-back settles it.
    pub nospace: bool,
}

impl Failure {
    /// A failure that happened before anything was sent.
    pub(crate) fn from_error(error: Error) -> Failure {
        Failure::known(error)
    }

    fn known(error: Error) -> Failure {
        Failure {
            error,
            outcome_known: true,
            retryable: false,
            nospace: false,
        }
    }

    fn unknown(error: Error) -> Failure {
        Failure {
            error,
            outcome_known: false,
            retryable: false,
            nospace: false,
        }
    }

    fn retryable(error: Error) -> Failure {
        Failure {
            error,
            outcome_known: true,
            retryable: true,
            nospace: false,
        }
    }
}

/// Status messages etcd (or the client, before sending) uses for requests
/// that certainly were not applied and may be retried. "no leader" comes
/// from the require-leader check before the request is processed; "too
/// many requests" from the apply-gap check before it is proposed; the
/// connect errors from tonic before any byte of the request was sent.
fn certainly_not_sent_or_refused(lower: &str) -> bool {
    lower.contains("etcdserver: no leader")
        || lower.contains("etcdserver: too many requests")
        || lower.contains("tcp connect error")
        || lower.contains("connection refused")
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        f.error
    }
}

/// Runs one etcd request with a deadline. A paused or partitioned member
/// accepts connections and then never answers, so nothing may wait unbounded.
pub(crate) async fn call<T, F>(what: &str, timeout: Duration, fut: F) -> Result<T, Failure>
where
    F: Future<Output = Result<T, etcd_client::Error>>,
{
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map(what, e)),
        Err(_) => Err(Failure::unknown(Error::Unavailable(format!(
            "etcd {what}: no answer within {timeout:?}"
        )))),
    }
}

/// Maps an etcd-client error. Messages never include credentials: etcd-client
/// errors carry status messages and transport errors, not request metadata.
pub(crate) fn map(what: &str, e: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    #[cfg(feature = "tls")]
    if let Some(f) = tls_failure(what, &e) {
        return f;
    }
    match e {
        E::GRpcStatus(status) => {
            let msg = status.message().to_string();
            let lower = msg.to_ascii_lowercase();
            let known = Failure::known;
            if lower.contains("request is too large") || lower.contains("message larger than max") {
                return known(Error::InvalidArgument(format!(
                    "etcd {what}: {msg}: the request exceeds the cluster's --max-request-bytes; \
                     set EtcdLimits::max_request_bytes to the cluster's value"
                )));
            }
            if lower.contains("too many operations in txn") {
                return known(Error::InvalidArgument(format!(
                    "etcd {what}: {msg}: set EtcdLimits::max_txn_ops to the cluster's --max-txn-ops"
                )));
            }
            if lower.contains("database space exceeded") || lower.contains("nospace") {
                return Failure {
                    nospace: true,
                    ..Failure::unknown(Error::Unavailable(format!(
                        "etcd {what}: {msg} (NOSPACE: the cluster reached --quota-backend-bytes; \
                         compact, defragment, then disarm the alarm)"
                    )))
                };
            }
            if certainly_not_sent_or_refused(&lower) {
                return Failure::retryable(Error::Unavailable(format!("etcd {what}: {msg}")));
            }
            match status.code() as i32 {
                grpc_code::INVALID_ARGUMENT | grpc_code::FAILED_PRECONDITION => {
                    known(Error::InvalidArgument(format!("etcd {what}: {msg}")))
                }
                grpc_code::PERMISSION_DENIED | grpc_code::UNAUTHENTICATED => {
                    known(Error::Io(std::sync::Arc::new(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("etcd {what}: {msg}"),
                    ))))
                }
                _ => Failure::unknown(Error::Unavailable(format!("etcd {what}: {msg}"))),
            }
        }
        E::InvalidArgs(m) => Failure::known(Error::InvalidArgument(format!("etcd {what}: {m}"))),
        E::InvalidUri(u) => Failure::known(Error::InvalidArgument(format!(
            "etcd {what}: invalid endpoint uri: {u}"
        ))),
        other => {
            let text = format!("{other} {other:?}").to_ascii_lowercase();
            let error = Error::Unavailable(format!("etcd {what}: {other}"));
            if certainly_not_sent_or_refused(&text) {
                Failure::retryable(error)
            } else {
                Failure::unknown(error)
            }
        }
    }
}

/// This client refused the server's certificate while connecting: the
/// request was never sent. (A server refusing this client's certificate
/// shows only as a closed connection here; the check at connect names it.)
#[cfg(feature = "tls")]
fn tls_failure(what: &str, e: &etcd_client::Error) -> Option<Failure> {
    let source: &(dyn std::error::Error + 'static) = match e {
        etcd_client::Error::GRpcStatus(status) => status,
        etcd_client::Error::TransportError(t) => t,
        _ => return None,
    };
    let tls = crate::tls::rustls_error_in_chain(source)?;
    crate::tls::is_certificate_refusal(tls).then(|| {
        Failure::known(Error::Tls(format!(
            "etcd {what}: {}",
            crate::tls::describe(tls, false)
        )))
    })
}

/// gRPC status codes (the numbers are fixed by the gRPC spec).
mod grpc_code {
    pub(super) const INVALID_ARGUMENT: i32 = 3;
    pub(super) const PERMISSION_DENIED: i32 = 7;
    pub(super) const FAILED_PRECONDITION: i32 = 9;
    pub(super) const UNAUTHENTICATED: i32 = 16;
}

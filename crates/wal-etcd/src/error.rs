//! Mapping etcd failures onto [`wal_core::Error`], and bounding every call
//! with a deadline.

use std::{future::Future, io, time::Duration};

use wal_core::Error;

/// A failed etcd request: what to report, and whether the request is known
/// not to have been applied (etcd refused it up front) or its outcome is
/// unknown (a timeout, a dropped connection).
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: Error,
    pub outcome_known: bool,
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
        Err(_) => Err(Failure {
            error: Error::Unavailable(format!("etcd {what}: no answer within {timeout:?}")),
            outcome_known: false,
        }),
    }
}

/// Maps an etcd-client error. Messages never include credentials: etcd-client
/// errors carry status messages and transport errors, not request metadata.
pub(crate) fn map(what: &str, e: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => {
            let msg = status.message().to_string();
            let lower = msg.to_ascii_lowercase();
            let known = |error| Failure {
                error,
                outcome_known: true,
            };
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
                return known(Error::Io(std::sync::Arc::new(io::Error::other(format!(
                    "etcd {what}: {msg} (NOSPACE alarm: compact, defragment, then disarm the alarm)"
                )))));
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
                _ => Failure {
                    error: Error::Unavailable(format!("etcd {what}: {msg}")),
                    outcome_known: false,
                },
            }
        }
        E::InvalidArgs(m) => Failure {
            error: Error::InvalidArgument(format!("etcd {what}: {m}")),
            outcome_known: true,
        },
        E::InvalidUri(u) => Failure {
            error: Error::InvalidArgument(format!("etcd {what}: invalid endpoint uri: {u}")),
            outcome_known: true,
        },
        other => Failure {
            error: Error::Unavailable(format!("etcd {what}: {other}")),
            outcome_known: false,
        },
    }
}

/// gRPC status codes (the numbers are fixed by the gRPC spec).
mod grpc_code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const UNAUTHENTICATED: i32 = 16;
}

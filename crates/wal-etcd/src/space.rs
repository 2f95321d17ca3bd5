//! The cluster's database size against its space quota, for operators
//! (`walctl inspect`): see the crate docs on compaction.

use etcd_client::{AlarmAction, AlarmType};
use wal_core::Result;

use crate::{client::Etcd, EtcdOptions};

/// One member's database size.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberSpace {
    /// The endpoint asked.
    pub endpoint: String,
    /// Size of the database file, in bytes (what the quota limits).
    pub db_size: i64,
    /// Bytes of it in use (the rest is free after compaction, until a
    /// defrag returns it).
    pub db_size_in_use: i64,
    /// The member's `--quota-backend-bytes`, if the server reports it (etcd
    /// 3.6 and later; older servers do not say).
    pub quota: Option<i64>,
}

/// The members' database sizes and whether a NOSPACE alarm is raised.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpaceReport {
    /// Each endpoint that answered.
    pub members: Vec<MemberSpace>,
    /// Endpoints that did not answer, with the error.
    pub unreachable: Vec<(String, String)>,
    /// A NOSPACE alarm is raised: etcd refuses every put until an operator
    /// compacts, defragments and disarms it.
    pub nospace_alarm: bool,
}

/// Asks every endpoint of `options` for its status (one connection each),
/// and the cluster for its alarms.
pub async fn space(options: &EtcdOptions) -> Result<SpaceReport> {
    let mut report = SpaceReport {
        members: Vec::new(),
        unreachable: Vec::new(),
        nospace_alarm: false,
    };
    for ep in &options.endpoints {
        let mut one = options.clone();
        one.endpoints = vec![ep.clone()];
        let status = async {
            let etcd = Etcd::connect(&one).await?;
            let mut m = etcd.client.maintenance_client();
            crate::error::call("status", one.request_timeout, m.status()).await
        };
        match status.await {
            Ok(s) => report.members.push(MemberSpace {
                endpoint: ep.clone(),
                db_size: s.db_size(),
                db_size_in_use: s.raft_used_db_size(),
                quota: (s.db_size_quota() > 0).then(|| s.db_size_quota()),
            }),
            Err(f) => report.unreachable.push((ep.clone(), f.error.to_string())),
        }
    }
    let etcd = Etcd::connect(options).await?;
    let mut m = etcd.client.maintenance_client();
    let alarms = crate::error::call(
        "alarm list",
        options.request_timeout,
        m.alarm(AlarmAction::Get, AlarmType::None, None),
    )
    .await?;
    report.nospace_alarm = alarms
        .alarms()
        .iter()
        .any(|a| a.alarm() == AlarmType::Nospace);
    Ok(report)
}

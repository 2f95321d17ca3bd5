//! etcd containers with authentication enabled, started with the docker CLI
//! on a fixed loopback host port so that a `docker restart` keeps the
//! endpoint.
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use wal_etcd::etcd_client::{self, ConnectOptions, Permission};

use crate::support::{docker, image_ref, preflight};

/// The root password of [`AuthEtcd`] and the password of its `wal` user.
pub const ROOT_PASSWORD: &str = "root-pw-7f3a";
pub const WAL_USER: &str = "wal";
pub const WAL_PASSWORD: &str = "wal-pw-c19e";

/// One etcd container; removed on drop.
pub struct AuthEtcd {
    pub id: String,
    pub endpoint: String,
    /// The prefix the `wal` user may read and write.
    pub prefix: String,
}

impl Drop for AuthEtcd {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .output();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl AuthEtcd {
    /// Starts etcd with simple tokens living `token_ttl` seconds, creates
    /// root and a `wal` user whose role may read and write `prefix`, and
    /// enables auth.
    pub async fn start(name: &str, token_ttl: u32, prefix: &str) -> AuthEtcd {
        preflight();
        let port = free_port();
        let id = docker(&[
            "run",
            "-d",
            "--name",
            name,
            "-p",
            &format!("127.0.0.1:{port}:2379"),
            &image_ref(),
            "/usr/local/bin/etcd",
            "--logger=zap",
            "--data-dir=/var/lib/etcd/data",
            "--listen-client-urls=http://0.0.0.0:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--auth-token=simple",
            &format!("--auth-token-ttl={token_ttl}"),
        ]);
        let node = AuthEtcd {
            id,
            endpoint: format!("http://127.0.0.1:{port}"),
            prefix: prefix.to_string(),
        };
        node.wait_ready(None, Duration::from_secs(60)).await;
        let mut c = etcd_client::Client::connect([node.endpoint.as_str()], None)
            .await
            .unwrap();
        c.user_add("root", ROOT_PASSWORD, None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.role_add("wal-role").await.unwrap();
        c.role_grant_permission("wal-role", Permission::read_write(prefix).with_prefix())
            .await
            .unwrap();
        c.user_add(WAL_USER, WAL_PASSWORD, None).await.unwrap();
        c.user_grant_role(WAL_USER, "wal-role").await.unwrap();
        c.auth_enable().await.unwrap();
        node.wait_ready(Some((WAL_USER, WAL_PASSWORD)), Duration::from_secs(30))
            .await;
        node
    }

    /// Waits until etcd answers a read under `user` (or unauthenticated).
    pub async fn wait_ready(&self, user: Option<(&str, &str)>, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "etcd at {} not ready within {within:?}: {last}",
                self.endpoint
            );
            let opts = user.map(|(u, p)| ConnectOptions::new().with_user(u, p));
            let attempt = async {
                let mut c = etcd_client::Client::connect([self.endpoint.as_str()], opts).await?;
                c.get(format!("{}ready", self.prefix), None).await
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timeout".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `docker restart`: etcd's data survives, its in-memory simple tokens
    /// do not.
    pub async fn restart(&self) {
        docker(&["restart", "-t", "0", &self.id]);
        self.wait_ready(Some((WAL_USER, WAL_PASSWORD)), Duration::from_secs(60))
            .await;
    }
}

//! etcd containers with authentication (user/password, simple tokens) and,
//! for the TLS tests, server and client certificates.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wal_etcd::etcd_client::{self, Client, ConnectOptions};

use super::{start_node, wait_ready, EtcdNode, NodeSpec};

/// The root user's password on the auth containers.
pub const ROOT_PASSWORD: &str = "root-pw-7f3c9e";

/// A port free right now on 127.0.0.1, for a container that must keep its
/// host port across `docker restart`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A single etcd node on a fixed host port with simple tokens that expire
/// after `token_ttl_secs` of disuse, and auth enabled with user `root`.
pub async fn start_auth_node(tag: &str, token_ttl_secs: u32) -> EtcdNode {
    let node = start_node(NodeSpec {
        name: super::unique(tag),
        initial_cluster: None,
        host_port: Some(free_port()),
        args: vec![
            "--auth-token=simple".into(),
            format!("--auth-token-ttl={token_ttl_secs}"),
        ],
    })
    .await;
    let eps = vec![node.endpoint.clone()];
    wait_ready(&eps, Duration::from_secs(60)).await;
    let mut c = Client::connect(&eps, None).await.unwrap();
    c.user_add("root", ROOT_PASSWORD, None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.auth_enable().await.unwrap();
    node
}

/// A client authenticated as root (without token refresh).
pub async fn root_client(endpoints: &[String]) -> Result<Client, etcd_client::Error> {
    Client::connect(
        endpoints,
        Some(ConnectOptions::new().with_user("root", ROOT_PASSWORD)),
    )
    .await
}

/// Whether `e` is etcd's answer to an expired or unknown token.
pub fn is_invalid_token(e: &etcd_client::Error) -> bool {
    e.to_string().contains("invalid auth token")
}

/// Waits until a token issued now has expired on the server, proving that
/// every token last used before this call has expired too (the server
/// forgets a simple token `--auth-token-ttl` after its last use). A fresh
/// probe client per attempt, used once after a growing pause, so probing
/// does not keep its own token alive.
pub async fn wait_tokens_expired(endpoints: &[String], ttl: Duration, within: Duration) {
    let deadline = Instant::now() + within;
    let mut pause = ttl + Duration::from_millis(1500);
    loop {
        let mut probe = root_client(endpoints).await.unwrap();
        tokio::time::sleep(pause).await;
        match probe.get("wal-test-probe", None).await {
            Err(e) if is_invalid_token(&e) => return,
            Err(e) => panic!("token probe: unexpected error {e}"),
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "a token was still valid {pause:?} after its last use: not expired within {within:?}"
                );
                pause += ttl;
            }
        }
    }
}

/// Waits until etcd answers an authenticated read.
pub async fn wait_auth_ready(endpoints: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "etcd at {endpoints:?} not ready within {within:?}: {last}"
        );
        let attempt = async {
            let mut c = root_client(endpoints).await?;
            c.get("wal-test-ready", None).await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timeout".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

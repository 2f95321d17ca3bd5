//! Real etcd for the tests: containers started with testcontainers from
//! `WAL_ETCD_IMAGE`, or an existing cluster named by `WAL_ETCD_ENDPOINTS`.
#![allow(dead_code, clippy::unwrap_used)]

pub mod proxy;
pub mod secure;

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use testcontainers::{
    bollard::models::PortBinding,
    core::{IntoContainerPort, WaitFor},
    runners::AsyncRunner,
    ContainerAsync, CopyTargetOptions, GenericImage, ImageExt,
};
use tokio::sync::OnceCell;
use wal_etcd::{etcd_client, EtcdOptions};

pub const DEFAULT_IMAGE: &str = "gcr.io/etcd-development/etcd:v3.5.17";

/// The image the tests run, from `WAL_ETCD_IMAGE`.
pub fn image_ref() -> String {
    std::env::var("WAL_ETCD_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_string())
}

fn split_image(image: &str) -> (String, String) {
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (
            image[..slash + i].to_string(),
            image[slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

/// Fails the test with instructions if Docker or the image is missing.
/// Never skips: under `CI=true` the message says so; elsewhere it says
/// exactly what to run.
pub fn preflight() {
    let image = image_ref();
    let problem = match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Err(e) => Some(format!("cannot run `docker` ({e})")),
        Ok(s) if !s.success() => {
            Some("the docker daemon is not reachable (`docker info` failed)".into())
        }
        Ok(_) => {
            let ok = Command::new("docker")
                .args(["image", "inspect", &image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            (!ok).then(|| format!("the etcd image {image} is not present locally"))
        }
    };
    if let Some(problem) = problem {
        let ci = std::env::var("CI").map(|v| v == "true").unwrap_or(false);
        if ci {
            panic!(
                "wal-etcd tests need Docker and the etcd image ({image}): {problem}. \
                 CI=true, so this fails instead of skipping; provision Docker and run scripts/setup.sh \
                 (WAL_ETCD_IMAGE=wal-etcd-local:latest builds the image offline), \
                 or set WAL_ETCD_ENDPOINTS to a running etcd for the single-node tests."
            );
        }
        panic!(
            "wal-etcd tests need Docker and the etcd image ({image}): {problem}.\n\
             Run:\n    scripts/setup.sh\n    WAL_ETCD_IMAGE=wal-etcd-local:latest cargo test -p wal-etcd\n\
             (or point the single-node tests at a running etcd with WAL_ETCD_ENDPOINTS=http://127.0.0.1:2379)"
        );
    }
}

/// A unique name for this test's keys, networks and containers.
pub fn unique(tag: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "{tag}-{}-{:x}-{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs the docker CLI; panics with its output on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes `container` when this test process exits, however it exits: for
/// containers kept in statics, which are never dropped.
pub fn reap_on_exit(container: &str) {
    let script = format!(
        "tail --pid={} -f /dev/null; docker rm -f -v {container} >/dev/null 2>&1",
        std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// How to start one etcd member.
pub struct NodeSpec {
    /// Member name; also the container name (peers resolve it).
    pub name: String,
    /// `name=http://name:2380,...` for a cluster; `None` for a single node.
    pub initial_cluster: Option<String>,
    /// A fixed host port for 2379 (survives kill + start), or a random one.
    pub host_port: Option<u16>,
    /// Extra etcd flags (e.g. `--quota-backend-bytes=...`).
    pub args: Vec<String>,
    /// Serve clients over TLS with these certificates (`https://` client
    /// URLs); `None` serves plain `http://`.
    pub tls: Option<ServerTls>,
}

/// A member's TLS material (PEM), copied into its container before it
/// starts, and whether it demands client certificates.
#[derive(Clone)]
pub struct ServerTls {
    /// The server certificate, with SANs `127.0.0.1` and `localhost` (the
    /// host reaches the member only through 127.0.0.1).
    pub cert_pem: String,
    /// The server certificate's private key.
    pub key_pem: String,
    /// The CA that signs the client certificates the member accepts.
    pub client_ca_pem: String,
    /// `--client-cert-auth`: refuse clients without a certificate the CA
    /// signed.
    pub client_cert_auth: bool,
}

/// Where the member's TLS files are in its container.
const TLS_DIR: &str = "/etc/etcd-tls";

impl NodeSpec {
    pub fn single(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            initial_cluster: None,
            host_port: None,
            args: Vec::new(),
            tls: None,
        }
    }

    /// A single node with extra etcd flags.
    pub fn single_with(name: &str, args: &[&str]) -> NodeSpec {
        NodeSpec {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..NodeSpec::single(name)
        }
    }
}

/// A running etcd container.
pub struct EtcdNode {
    pub container: ContainerAsync<GenericImage>,
    pub name: String,
    pub endpoint: String,
}

impl EtcdNode {
    pub fn id(&self) -> &str {
        self.container.id()
    }
}

pub async fn start_node(spec: NodeSpec) -> EtcdNode {
    preflight();
    let (name, tag) = split_image(&image_ref());
    // A single node is its own only peer: it advertises 127.0.0.1. Container
    // names resolve only on a user-defined docker network, and etcd 3.5
    // resolves the advertised peer URL at bootstrap, retrying forever
    // ("failed to resolve URL Host") on the default bridge. Cluster members
    // are connected to their own network, where names resolve.
    let peer = match spec.initial_cluster {
        Some(_) => format!("http://{}:2380", spec.name),
        None => "http://127.0.0.1:2380".to_string(),
    };
    let cluster = spec
        .initial_cluster
        .clone()
        .unwrap_or_else(|| format!("{}={peer}", spec.name));
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    let mut cmd = vec![
        "/usr/local/bin/etcd".to_string(),
        "--logger=zap".into(),
        format!("--name={}", spec.name),
        "--data-dir=/var/lib/etcd/data".into(),
        format!("--listen-client-urls={scheme}://0.0.0.0:2379"),
        format!("--advertise-client-urls={scheme}://127.0.0.1:2379"),
        "--listen-peer-urls=http://0.0.0.0:2380".into(),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster={cluster}"),
        "--initial-cluster-state=new".into(),
    ];
    if spec.initial_cluster.is_some() {
        cmd.push("--initial-cluster-token=wal-etcd-test".into());
        // Faster failure detection in the partition test.
        cmd.push("--heartbeat-interval=100".into());
        cmd.push("--election-timeout=1000".into());
    }
    if let Some(tls) = &spec.tls {
        cmd.push(format!("--cert-file={TLS_DIR}/server.crt"));
        cmd.push(format!("--key-file={TLS_DIR}/server.key"));
        cmd.push(format!("--trusted-ca-file={TLS_DIR}/client-ca.crt"));
        if tls.client_cert_auth {
            cmd.push("--client-cert-auth".into());
        }
    }
    cmd.extend(spec.args.iter().cloned());
    let image = GenericImage::new(name, tag)
        .with_exposed_port(2379.tcp())
        .with_wait_for(WaitFor::Nothing);
    // Publish the client port on the loopback interface only (a random host
    // port unless the spec fixes one); the peer port is not published.
    // testcontainers' own mappings bind every interface, so the bindings are
    // set on docker's host config directly.
    let host_port = spec.host_port.map(|p| p.to_string()).unwrap_or_default();
    let mut request = image.with_cmd(cmd);
    if let Some(tls) = &spec.tls {
        for (file, pem, mode) in [
            ("server.crt", &tls.cert_pem, 0o644),
            ("server.key", &tls.key_pem, 0o600),
            ("client-ca.crt", &tls.client_ca_pem, 0o644),
        ] {
            request = request.with_copy_to(
                CopyTargetOptions::new(format!("{TLS_DIR}/{file}")).with_mode(mode),
                pem.clone().into_bytes(),
            );
        }
    }
    let container = request
        .with_container_name(spec.name.clone())
        .with_startup_timeout(Duration::from_secs(60))
        .with_host_config_modifier(move |hc| {
            hc.publish_all_ports = Some(false);
            hc.port_bindings = Some(HashMap::from([(
                "2379/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(host_port.clone()),
                }]),
            )]));
        })
        .start()
        .await
        .unwrap_or_else(|e| panic!("start etcd container {}: {e}", spec.name));
    let port = match spec.host_port {
        Some(p) => p,
        None => container
            .get_host_port_ipv4(2379.tcp())
            .await
            .unwrap_or_else(|e| panic!("host port of {}: {e}", spec.name)),
    };
    EtcdNode {
        container,
        name: spec.name,
        endpoint: format!("{scheme}://127.0.0.1:{port}"),
    }
}

/// Waits (with a deadline) until etcd answers a status call on every endpoint.
pub async fn wait_ready(endpoints: &[String], within: Duration) {
    wait_ready_with(endpoints, None, within).await
}

/// [`wait_ready`] for a client that needs connect options (TLS, auth).
pub async fn wait_ready_with(
    endpoints: &[String],
    options: Option<etcd_client::ConnectOptions>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    for ep in endpoints {
        let mut last_err = String::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "etcd at {ep} not ready within {within:?}: {last_err}"
            );
            let attempt = async {
                let mut c = etcd_client::Client::connect([ep.as_str()], options.clone()).await?;
                c.status().await?;
                // A linearizable read proves there is a leader.
                c.get("wal-test-ready", None).await
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => last_err = e.to_string(),
                Err(_) => last_err = "timeout".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

static SHARED: OnceCell<(Vec<String>, Option<EtcdNode>)> = OnceCell::const_new();

/// Endpoints of the etcd shared by the single-node tests of this binary:
/// `WAL_ETCD_ENDPOINTS`, or one container started once.
pub async fn shared_endpoints() -> Vec<String> {
    let (eps, _) = SHARED
        .get_or_init(|| async {
            if let Ok(eps) = std::env::var("WAL_ETCD_ENDPOINTS") {
                let eps: Vec<String> = eps
                    .split(',')
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        if s.contains("://") {
                            s.to_string()
                        } else {
                            format!("http://{s}")
                        }
                    })
                    .collect();
                wait_ready(&eps, Duration::from_secs(30)).await;
                return (eps, None);
            }
            let node = start_node(NodeSpec::single(&unique("wal-etcd-shared"))).await;
            reap_on_exit(node.id());
            let eps = vec![node.endpoint.clone()];
            wait_ready(&eps, Duration::from_secs(60)).await;
            (eps, Some(node))
        })
        .await;
    eps.clone()
}

/// Options for a test log with its own prefix on `endpoints`.
pub fn options(endpoints: &[String], prefix: &str, name: &str) -> EtcdOptions {
    EtcdOptions::new(endpoints.iter().cloned(), name).prefix(prefix.to_string())
}

/// A second client, as an operator would use.
pub async fn operator(endpoints: &[String]) -> etcd_client::Client {
    etcd_client::Client::connect(endpoints, None).await.unwrap()
}

/// Revokes the lease behind a log's owner key, as an operator (or the TTL)
/// would. Returns whether there was an owner.
pub async fn revoke_owner(endpoints: &[String], prefix: &str, name: &str) -> bool {
    let mut c = operator(endpoints).await;
    let key = format!("{prefix}{name}/owner");
    let resp = c.get(key, None).await.unwrap();
    match resp.kvs().first() {
        Some(kv) => {
            c.lease_revoke(kv.lease()).await.unwrap();
            true
        }
        None => false,
    }
}

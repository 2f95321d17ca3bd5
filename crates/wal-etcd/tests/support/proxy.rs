//! A TCP fault proxy between a client and one etcd member, to produce
//! unknown outcomes on purpose. It forwards whole HTTP/2 frames, so it can
//! drop exactly the response to one request (a txn that etcd applied, whose
//! answer never arrives) and cut the connection; it can also hold new
//! connections (no answers until released) or stop listening (connection
//! refused).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{watch, Notify},
    task::JoinHandle,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;

struct Shared {
    /// True: new connections are accepted but nothing is forwarded.
    hold: watch::Sender<bool>,
    /// Drop the response to the next request whose DATA frame carries at
    /// least this many bytes (0: off).
    arm_over: AtomicUsize,
    /// The stream whose response is to be dropped (0: none yet).
    victim: AtomicU32,
    fired: AtomicBool,
    fired_notify: Notify,
    /// After firing, hold new connections until released.
    hold_after_fire: AtomicBool,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

/// A running proxy; `endpoint` is what clients connect to.
pub struct Proxy {
    pub endpoint: String,
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// A proxy on a free 127.0.0.1 port in front of `upstream`
    /// (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let p = Proxy {
            endpoint: format!("http://{addr}"),
            addr,
            upstream,
            shared: Arc::new(Shared {
                hold: watch::channel(false).0,
                arm_over: AtomicUsize::new(0),
                victim: AtomicU32::new(0),
                fired: AtomicBool::new(false),
                fired_notify: Notify::new(),
                hold_after_fire: AtomicBool::new(false),
                conns: Mutex::default(),
            }),
            listener: Mutex::new(None),
        };
        p.serve(listener);
        p
    }

    fn serve(&self, listener: TcpListener) {
        let (shared, upstream) = (self.shared.clone(), self.upstream);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (shared2, mut hold_rx) = (shared.clone(), shared.hold.subscribe());
                let conn = tokio::spawn(async move {
                    // Held: accept, but forward nothing until released.
                    while *hold_rx.borrow_and_update() {
                        if hold_rx.changed().await.is_err() {
                            return;
                        }
                    }
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        pump_pair(client, server, shared2).await;
                    }
                });
                shared.conns.lock().unwrap().push(conn);
            }
        });
        *self.listener.lock().unwrap() = Some(task);
    }

    /// Drops the response to the next request carrying a DATA frame of at
    /// least `bytes` bytes, and cuts that connection. With `hold`, new
    /// connections are then held until [`release`](Self::release).
    pub fn drop_next_response_over(&self, bytes: usize, hold: bool) {
        self.shared.fired.store(false, Ordering::SeqCst);
        self.shared.victim.store(0, Ordering::SeqCst);
        self.shared.hold_after_fire.store(hold, Ordering::SeqCst);
        self.shared.arm_over.store(bytes, Ordering::SeqCst);
    }

    /// Whether the armed response was dropped.
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Waits until the armed response was dropped.
    pub async fn wait_fired(&self) {
        loop {
            let n = self.shared.fired_notify.notified();
            if self.fired() {
                return;
            }
            n.await;
        }
    }

    /// Holds new connections: accepted, but nothing is forwarded.
    pub fn hold(&self) {
        self.shared.hold.send_replace(true);
    }

    /// Forwards held and new connections again.
    pub fn release(&self) {
        self.shared.hold.send_replace(false);
    }

    /// Cuts every connection and stops listening: new connections are
    /// refused until [`listen`](Self::listen).
    pub fn refuse(&self) {
        if let Some(t) = self.listener.lock().unwrap().take() {
            t.abort();
        }
        for c in self.shared.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn listen(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.refuse();
    }
}

/// Reads one whole HTTP/2 frame (header + payload) into `buf`. Returns (type, stream id, payload length).
async fn read_frame(
    r: &mut (impl AsyncReadExt + Unpin),
    buf: &mut Vec<u8>,
) -> Option<(u8, u32, usize)> {
    buf.clear();
    buf.resize(9, 0);
    r.read_exact(&mut buf[..9]).await.ok()?;
    let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
    let kind = buf[3];
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
    buf.resize(9 + len, 0);
    r.read_exact(&mut buf[9..]).await.ok()?;
    Some((kind, stream, len))
}

async fn pump_pair(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up_shared = shared.clone();
    let up = async move {
        let mut preface = [0u8; 24];
        if cr.read_exact(&mut preface).await.is_err() || preface != PREFACE {
            return;
        }
        if sw.write_all(&preface).await.is_err() {
            return;
        }
        let mut buf = Vec::new();
        while let Some((kind, stream, len)) = read_frame(&mut cr, &mut buf).await {
            let over = up_shared.arm_over.load(Ordering::SeqCst);
            if kind == DATA && over > 0 && len >= over {
                up_shared.arm_over.store(0, Ordering::SeqCst);
                up_shared.victim.store(stream, Ordering::SeqCst);
            }
            if sw.write_all(&buf).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let mut buf = Vec::new();
        while let Some((kind, stream, _)) = read_frame(&mut sr, &mut buf).await {
            let victim = shared.victim.load(Ordering::SeqCst);
            if victim != 0 && stream == victim && (kind == HEADERS || kind == DATA) {
                // etcd answered (so it applied the request): drop the answer
                // and the connection.
                shared.victim.store(0, Ordering::SeqCst);
                if shared.hold_after_fire.load(Ordering::SeqCst) {
                    // Set before the cut, so the client's reconnect is held.
                    shared.hold.send_replace(true);
                }
                shared.fired.store(true, Ordering::SeqCst);
                shared.fired_notify.notify_waiters();
                return;
            }
            if cw.write_all(&buf).await.is_err() {
                return;
            }
        }
    };
    // Either direction ending ends the connection (both halves dropped).
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

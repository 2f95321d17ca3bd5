//! A TCP fault proxy between a client and one etcd member, to produce
//! unknown outcomes and slow networks on purpose. It listens on a free
//! 127.0.0.1 port and forwards whole HTTP/2 frames, so that it can:
//!
//! - drop exactly the response to one request (a txn that etcd applied,
//!   whose answer never arrives) and cut the connection
//!   ([`drop_next_response_over`](Proxy::drop_next_response_over));
//! - apply a [`Fault`] switchable at run time to every connection: pass
//!   through, delay requests, drop responses (forward what the client sends,
//!   discard what the server answers: "request sent, response lost"; the
//!   h2 connection then breaks, which is fine), or black-hole (accept and
//!   forward nothing either way);
//! - cut every connection ([`cut`](Proxy::cut)), hold new connections (no
//!   answers until released) or stop listening (connection refused);
//! - delay every request but lease keep-alives
//!   ([`Fault::DelayAllButKeepAlives`]), so that unary calls and watch
//!   creation are slow while renewals are not;
//! - answer the next unary requests itself with the gRPC error etcd sends
//!   for a request it refused up front ([`refuse_next`](Proxy::refuse_next)),
//!   without forwarding them: "no leader", "too many requests".
//!
//! Counters of what was forwarded, delayed and dropped let tests wait for
//! a fault to have taken effect instead of sleeping.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch, Notify},
    task::JoinHandle,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
/// DATA and HEADERS flag: the sender's last frame on this stream.
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// HTTP/2 error code CANCEL.
const CANCEL: u32 = 0x8;
/// A lease keep-alive request's DATA frame payload: the 5-byte gRPC
/// message header and the lease id (a tag and at most 10 varint bytes).
const KEEPALIVE_MAX: usize = 16;
/// Request DATA frames at least this big are txns: a compare and a put name
/// a key three times, a range (about 48 bytes here) once.
const TXN_BYTES: usize = 100;

/// What the proxy does to the bytes of every connection, switchable at run
/// time (it applies to frames read after the switch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Forward client bytes this long after they arrived (in order);
    /// forward server bytes at once.
    DelayRequests(Duration),
    /// Forward client bytes; discard server bytes.
    DropResponses,
    /// Forward nothing either way (bytes are read and discarded).
    BlackHole,
    /// Forward the DATA frames (and what follows them) of every stream
    /// whose DATA frame is bigger than a lease keep-alive's this long after
    /// they arrived; everything else at once. So ranges, txns and watch
    /// creation are slow, while keep-alive renewals (and the streams and
    /// HTTP/2 control frames) are not. HEADERS always pass at once: their
    /// header compression state must stay in order.
    DelayAllButKeepAlives(Duration),
}

/// The answer [`Proxy::refuse_next`] gives instead of etcd's: a gRPC status
/// etcd sends for a request it refused before processing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `etcdserver: no leader` (UNAVAILABLE).
    NoLeader,
    /// `etcdserver: too many requests` (RESOURCE_EXHAUSTED).
    TooManyRequests,
}

impl Refusal {
    fn status(self) -> (&'static str, &'static str) {
        match self {
            Refusal::NoLeader => ("14", "etcdserver: no leader"),
            Refusal::TooManyRequests => ("8", "etcdserver: too many requests"),
        }
    }
}

/// An armed [`Proxy::refuse_next`].
#[derive(Default)]
struct Refuse {
    left: u32,
    with: Option<Refusal>,
}

/// Counters, in bytes of whole frames (headers included).
#[derive(Default)]
struct Counters {
    up_forwarded: AtomicU64,
    up_dropped: AtomicU64,
    /// Client bytes queued for later delivery, not yet written.
    up_pending: AtomicU64,
    down_forwarded: AtomicU64,
    down_dropped: AtomicU64,
    /// Non-empty DATA frames (messages) [`Fault::DelayAllButKeepAlives`]
    /// delayed and then forwarded.
    slowed: AtomicU64,
    /// Requests answered by [`Proxy::refuse_next`].
    refused: AtomicU64,
    changed: Notify,
}

struct Shared {
    /// True: new connections are accepted but nothing is forwarded.
    hold: watch::Sender<bool>,
    fault: watch::Sender<Fault>,
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
    counters: Counters,
    late: Mutex<Late>,
    late_answered: Notify,
    refuse: Mutex<Refuse>,
}

/// [`Proxy::land_late`]: a request held back, delivered just before the
/// first txn that follows it.
#[derive(Default)]
struct Late {
    /// Hold the next request DATA frame at least this big (0: off).
    over: usize,
    victim: u32,
    held: Vec<Vec<u8>>,
    /// Txns seen after the victim.
    calls_after: u32,
    released: bool,
    answered: bool,
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
                fault: watch::channel(Fault::Pass).0,
                arm_over: AtomicUsize::new(0),
                victim: AtomicU32::new(0),
                fired: AtomicBool::new(false),
                fired_notify: Notify::new(),
                hold_after_fire: AtomicBool::new(false),
                conns: Mutex::default(),
                counters: Counters::default(),
                late: Mutex::default(),
                late_answered: Notify::new(),
                refuse: Mutex::default(),
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
                let mut conns = shared.conns.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(conn);
            }
        });
        *self.listener.lock().unwrap() = Some(task);
    }

    /// Switches every connection (open and future) to `fault`.
    pub fn set(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
    }

    /// The fault in effect.
    pub fn fault(&self) -> Fault {
        *self.shared.fault.borrow()
    }

    /// Forward both ways again (what was delayed is still delivered late).
    pub fn pass(&self) {
        self.set(Fault::Pass);
    }

    /// Cuts every open connection (clients see a reset and reconnect); the
    /// proxy keeps listening. Bytes still queued by a delay are lost.
    pub fn cut(&self) {
        for c in self.shared.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Client bytes forwarded to the server so far.
    pub fn up_forwarded(&self) -> u64 {
        self.shared.counters.up_forwarded.load(Ordering::SeqCst)
    }

    /// Client bytes discarded (black hole) so far.
    pub fn up_dropped(&self) -> u64 {
        self.shared.counters.up_dropped.load(Ordering::SeqCst)
    }

    /// Client bytes held by a delay, not yet forwarded.
    pub fn up_pending(&self) -> u64 {
        self.shared.counters.up_pending.load(Ordering::SeqCst)
    }

    /// Server bytes forwarded to the client so far.
    pub fn down_forwarded(&self) -> u64 {
        self.shared.counters.down_forwarded.load(Ordering::SeqCst)
    }

    /// Server bytes discarded (dropped responses, black hole) so far.
    pub fn down_dropped(&self) -> u64 {
        self.shared.counters.down_dropped.load(Ordering::SeqCst)
    }

    /// Messages (non-empty DATA frames) delayed by
    /// [`Fault::DelayAllButKeepAlives`] and then forwarded, so far.
    pub fn slowed(&self) -> u64 {
        self.shared.counters.slowed.load(Ordering::SeqCst)
    }

    /// Requests answered by [`refuse_next`](Self::refuse_next) so far.
    pub fn refused(&self) -> u64 {
        self.shared.counters.refused.load(Ordering::SeqCst)
    }

    /// Answers the next `n` requests on new streams (a stream's first
    /// message: ranges, txns, lease grants and revokes, a new keep-alive
    /// stream or watch; not the messages of streams already open) itself
    /// with `with`, as etcd answers a request it refused up front. The request's DATA never reaches etcd (its HEADERS do, then a
    /// cancel of the stream), so etcd certainly did not apply it.
    pub fn refuse_next(&self, n: u32, with: Refusal) {
        *self.shared.refuse.lock().unwrap() = Refuse {
            left: n,
            with: Some(with),
        };
    }

    /// Waits until `cond(self)` holds (re-checked whenever a counter
    /// moves), or panics after `within`.
    pub async fn wait_for(&self, what: &str, within: Duration, cond: impl Fn(&Proxy) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let changed = self.shared.counters.changed.notified();
            if cond(self) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "proxy: {what}: not within {within:?}");
            // The counters notify on every frame; the cap only bounds a
            // missed wake-up.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), changed).await;
        }
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

    /// Holds back the next request whose DATA frame carries at least
    /// `bytes` bytes (and drops the client's cancel of it), and delivers it
    /// just before the next txn (at least `TXN_BYTES`; the read-back's two
    /// key ranges are smaller and pass),
    /// once etcd has answered it (the answer is dropped). For an append
    /// whose txn times out: the read-back sees the head unchanged, the
    /// append lands, then the void arrives.
    pub fn land_late(&self, bytes: usize) {
        *self.shared.late.lock().unwrap() = Late {
            over: bytes,
            ..Late::default()
        };
    }

    /// Whether the held request was delivered and etcd answered it.
    pub fn landed_late(&self) -> bool {
        self.shared.late.lock().unwrap().answered
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
        self.cut();
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

fn count(c: &AtomicU64, n: usize, changed: &Notify) {
    c.fetch_add(n as u64, Ordering::SeqCst);
    changed.notify_waiters();
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A gRPC "trailers-only" answer: one HEADERS frame ending the stream with
/// a status. Header fields are literals without indexing (RFC 7541 6.2.2)
/// and `:status` comes from the static table, so the client's header
/// decoding state, shared with etcd's answers, is left as it was.
fn trailers_only(stream: u32, with: Refusal) -> Vec<u8> {
    let (code, message) = with.status();
    let mut block = vec![0x88]; // :status 200 (static table entry 8)
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("grpc-status", code),
        ("grpc-message", message),
    ] {
        // New name, no Huffman coding; every string is under 127 bytes.
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    frame(HEADERS, END_STREAM | END_HEADERS, stream, &block)
}

/// Streams of one connection that a selective fault took over.
#[derive(Default)]
struct Streams {
    /// Answered by the proxy; nothing more of them is forwarded.
    refused: HashSet<u32>,
    /// Delayed by [`Fault::DelayAllButKeepAlives`]: their frames keep going
    /// through the slow lane, in order.
    slowed: HashSet<u32>,
    /// Open streams that carried a DATA frame.
    with_data: HashSet<u32>,
}

/// What the up pump does with a frame of a selective fault.
enum Take {
    Refuse(Refusal),
    Slow(Instant),
}

async fn pump_pair(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let (mut cr, cw) = client.into_split();
    // Written by the down pump and by refusals, one whole frame at a time.
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    let (mut sr, mut sw) = server.into_split();
    let streams = Arc::new(Mutex::new(Streams::default()));
    // Client -> server goes through a queue, so that a delay holds bytes
    // without holding up the reading of later ones.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    // The slow lane: frames of slowed streams wait here, in order, then join
    // the queue; the rest of the connection goes on meanwhile.
    let (slow_tx, mut slow_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let slow_lane = {
        let (tx, shared) = (tx.clone(), shared.clone());
        async move {
            while let Some((due, buf)) = slow_rx.recv().await {
                tokio::time::sleep_until(due.into()).await;
                let data = buf[3] == DATA && buf.len() > 9;
                if tx.send((Instant::now(), buf)).is_err() {
                    return;
                }
                if data {
                    let c = &shared.counters;
                    count(&c.slowed, 1, &c.changed);
                }
            }
        }
    };
    let writer_shared = shared.clone();
    let writer = async move {
        while let Some((due, buf)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            let c = &writer_shared.counters;
            c.up_pending.fetch_sub(buf.len() as u64, Ordering::SeqCst);
            if sw.write_all(&buf).await.is_err() {
                return;
            }
            count(&c.up_forwarded, buf.len(), &c.changed);
        }
    };
    let up_shared = shared.clone();
    let (up_streams, up_cw) = (streams.clone(), cw.clone());
    let up = async move {
        let mut preface = [0u8; 24];
        if cr.read_exact(&mut preface).await.is_err() || preface != PREFACE {
            return;
        }
        up_shared
            .counters
            .up_pending
            .fetch_add(preface.len() as u64, Ordering::SeqCst);
        if tx.send((Instant::now(), preface.to_vec())).is_err() {
            return;
        }
        let mut buf = Vec::new();
        while let Some((kind, stream, len)) = read_frame(&mut cr, &mut buf).await {
            let release = {
                let mut late = up_shared.late.lock().unwrap();
                if late.over > 0 && late.victim == 0 && kind == DATA && len >= late.over {
                    late.victim = stream;
                }
                if late.victim != 0 && stream == late.victim && !late.released {
                    // The victim's frames (and the client's cancel) wait.
                    if kind != RST_STREAM {
                        late.held.push(std::mem::take(&mut buf));
                    }
                    continue;
                }
                if late.victim != 0 && !late.released && kind == DATA && len >= TXN_BYTES {
                    late.calls_after += 1;
                    if late.calls_after == 1 {
                        late.released = true;
                        Some(std::mem::take(&mut late.held))
                    } else {
                        None
                    }
                } else {
                    None
                }
            };
            if let Some(held) = release {
                let answered = up_shared.late_answered.notified();
                for f in held {
                    up_shared
                        .counters
                        .up_pending
                        .fetch_add(f.len() as u64, Ordering::SeqCst);
                    if tx.send((Instant::now(), f)).is_err() {
                        return;
                    }
                }
                // Forward the next call only once etcd answered the victim.
                let _ = tokio::time::timeout(Duration::from_secs(5), answered).await;
            }
            let fault = *up_shared.fault.borrow();
            let c = &up_shared.counters;
            let take = {
                let mut st = up_streams.lock().unwrap();
                if st.refused.contains(&stream) {
                    // The client's cancel of an answered stream, if any.
                    count(&c.up_dropped, buf.len(), &c.changed);
                    continue;
                }
                // A request's first message: tonic ends a unary request
                // with an empty DATA frame of its own, so the first frame
                // does not tell unary from streaming; streams already open
                // (the keep-alive, watches) are not new.
                let first = kind == DATA && len > 0 && st.with_data.insert(stream);
                if kind == DATA && buf[4] & END_STREAM != 0 {
                    st.with_data.remove(&stream);
                }
                let refusal = if first && !st.slowed.contains(&stream) {
                    let mut r = up_shared.refuse.lock().unwrap();
                    match r.with {
                        Some(with) if r.left > 0 => {
                            r.left -= 1;
                            Some(with)
                        }
                        _ => None,
                    }
                } else {
                    None
                };
                let delay = match fault {
                    Fault::DelayAllButKeepAlives(d) => Some(d),
                    _ => None,
                };
                if let Some(with) = refusal {
                    st.refused.insert(stream);
                    Some(Take::Refuse(with))
                } else if (kind == DATA || kind == RST_STREAM) && st.slowed.contains(&stream) {
                    Some(Take::Slow(Instant::now() + delay.unwrap_or_default()))
                } else if let (Some(d), true) = (delay, kind == DATA && len > KEEPALIVE_MAX) {
                    st.slowed.insert(stream);
                    Some(Take::Slow(Instant::now() + d))
                } else {
                    None
                }
            };
            match take {
                Some(Take::Refuse(with)) => {
                    // etcd gets the stream's HEADERS (already forwarded: the
                    // header compression state must stay in step) and then
                    // its cancel, never its request.
                    count(&c.up_dropped, buf.len(), &c.changed);
                    let rst = frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes());
                    c.up_pending.fetch_add(rst.len() as u64, Ordering::SeqCst);
                    if tx.send((Instant::now(), rst)).is_err() {
                        return;
                    }
                    let answer = trailers_only(stream, with);
                    if up_cw.lock().await.write_all(&answer).await.is_err() {
                        return;
                    }
                    count(&c.refused, 1, &c.changed);
                    continue;
                }
                Some(Take::Slow(due)) => {
                    c.up_pending.fetch_add(buf.len() as u64, Ordering::SeqCst);
                    c.changed.notify_waiters();
                    if slow_tx.send((due, std::mem::take(&mut buf))).is_err() {
                        return;
                    }
                    continue;
                }
                None => {}
            }
            let due = match fault {
                Fault::BlackHole => {
                    count(&c.up_dropped, buf.len(), &c.changed);
                    continue;
                }
                Fault::DelayRequests(d) => Instant::now() + d,
                Fault::Pass | Fault::DropResponses | Fault::DelayAllButKeepAlives(_) => {
                    Instant::now()
                }
            };
            let over = up_shared.arm_over.load(Ordering::SeqCst);
            if kind == DATA && over > 0 && len >= over {
                up_shared.arm_over.store(0, Ordering::SeqCst);
                up_shared.victim.store(stream, Ordering::SeqCst);
            }
            c.up_pending.fetch_add(buf.len() as u64, Ordering::SeqCst);
            c.changed.notify_waiters();
            if tx.send((due, std::mem::take(&mut buf))).is_err() {
                return;
            }
        }
    };
    let down = async move {
        let mut buf = Vec::new();
        while let Some((kind, stream, _)) = read_frame(&mut sr, &mut buf).await {
            let c = &shared.counters;
            if streams.lock().unwrap().refused.contains(&stream) {
                // The client already has the proxy's answer.
                count(&c.down_dropped, buf.len(), &c.changed);
                continue;
            }
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
                count(&c.down_dropped, buf.len(), &c.changed);
                return;
            }
            {
                let mut late = shared.late.lock().unwrap();
                if late.released && stream == late.victim && (kind == HEADERS || kind == DATA) {
                    // etcd applied (or refused) the late request: its answer
                    // goes nowhere, the client cancelled it long ago.
                    late.answered = true;
                    shared.late_answered.notify_waiters();
                    count(&c.down_dropped, buf.len(), &c.changed);
                    continue;
                }
            }
            let fault = *shared.fault.borrow();
            if matches!(fault, Fault::DropResponses | Fault::BlackHole) {
                count(&c.down_dropped, buf.len(), &c.changed);
                continue;
            }
            if cw.lock().await.write_all(&buf).await.is_err() {
                return;
            }
            count(&c.down_forwarded, buf.len(), &c.changed);
        }
    };
    // The client side ending ends the connection once what it sent was
    // delivered (a delay still delivers it); the server side ending, or the
    // writer failing, ends it at once.
    let up_then_flush = async move {
        tokio::join!(up, slow_lane, writer);
    };
    tokio::select! {
        _ = up_then_flush => {}
        _ = down => {}
    }
}

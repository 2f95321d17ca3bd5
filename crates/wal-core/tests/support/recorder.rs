//! A metrics recorder for tests: metrics-util's debugging recorder,
//! installed once per test process, with totals kept across snapshots (a
//! snapshot drains counters and histograms). Shared by the metrics tests of
//! wal-core and the backends (`#[path]`-included).
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Mutex, OnceLock};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Installs the recorder (once); call before opening a Wal.
pub fn install() {
    snapshotter();
}

fn snapshotter() -> &'static Snapshotter {
    static S: OnceLock<Snapshotter> = OnceLock::new();
    S.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let s = recorder.snapshotter();
        recorder.install().expect("install the debugging recorder");
        s
    })
}

/// Everything recorded so far: a snapshot drains the recorder's counters
/// and histograms, so they are summed here; a gauge keeps its last value.
#[derive(Default)]
struct Totals {
    seen: Vec<(String, Labels, V)>,
}

/// A metric's labels: (key, value) pairs.
type Labels = Vec<(String, String)>;

#[derive(Clone, Debug)]
pub enum V {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

impl From<DebugValue> for V {
    fn from(v: DebugValue) -> V {
        match v {
            DebugValue::Counter(n) => V::Counter(n),
            DebugValue::Gauge(g) => V::Gauge(g.into_inner()),
            DebugValue::Histogram(h) => {
                V::Histogram(h.into_iter().map(|x| x.into_inner()).collect())
            }
        }
    }
}

fn totals() -> &'static Mutex<Totals> {
    static T: OnceLock<Mutex<Totals>> = OnceLock::new();
    T.get_or_init(Mutex::default)
}

/// Every value of metric `name` whose labels include all of `labels`.
pub fn values(name: &str, labels: &[(&str, &str)]) -> Vec<V> {
    let mut t = totals().lock().unwrap();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let value = V::from(value);
        let key = key.key();
        let (n, l): (String, Labels) = (
            key.name().to_string(),
            key.labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect(),
        );
        match t.seen.iter_mut().find(|(n2, l2, _)| *n2 == n && *l2 == l) {
            Some((_, _, old)) => match (old, value) {
                (V::Counter(a), V::Counter(b)) => *a += b,
                (V::Histogram(a), V::Histogram(b)) => a.extend(b),
                (old, new) => *old = new,
            },
            None => t.seen.push((n, l, value)),
        }
    }
    t.seen
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v.clone())
        .collect()
}

pub fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    values(name, labels)
        .into_iter()
        .map(|v| match v {
            V::Counter(n) => n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

pub fn histogram(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    values(name, labels)
        .into_iter()
        .flat_map(|v| match v {
            V::Histogram(h) => h,
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .collect()
}

pub fn gauge(name: &str, labels: &[(&str, &str)]) -> f64 {
    match values(name, labels).as_slice() {
        [V::Gauge(g)] => *g,
        other => panic!("{name}: expected one gauge, got {other:?}"),
    }
}

/// Waits, polling every few milliseconds, until `cond` holds; fails the
/// test naming `what` if it does not within `within`.
pub async fn until(what: &str, within: std::time::Duration, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

//! Property test: random sequences of appends, atomic batches, checkpoints
//! (committed, aborted, dropped, cut by a crash), injected failures and
//! reopens, checked against a simple model of the recovery contract.

use futures::StreamExt;
use proptest::prelude::*;
use wal_core::{EntryKind, Lsn, MemFault, MemStore, Wal, WalOptions};

#[derive(Clone, Debug)]
enum Outcome {
    Commit,
    Abort,
    Drop,
    Crash,
}

#[derive(Clone, Debug)]
enum Op {
    Append,
    Batch(usize),
    /// A checkpoint with `state` entries, `during` data appends while open.
    Checkpoint {
        state: usize,
        during: usize,
        outcome: Outcome,
    },
    /// The next append fails; then the process crashes.
    FailThenCrash,
    Trim,
    Reopen {
        crash: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Append),
        2 => (1usize..6).prop_map(Op::Batch),
        2 => (0usize..4, 0usize..3, prop_oneof![
            Just(Outcome::Commit), Just(Outcome::Abort), Just(Outcome::Drop), Just(Outcome::Crash)
        ]).prop_map(|(state, during, outcome)| Op::Checkpoint { state, during, outcome }),
        1 => Just(Op::FailThenCrash),
        1 => Just(Op::Trim),
        1 => any::<bool>().prop_map(|crash| Op::Reopen { crash }),
    ]
}

/// What recovery must yield: the last committed checkpoint's state, then the
/// data entries after its begin marker.
#[derive(Default, Debug)]
struct Model {
    state: Vec<String>,
    data: Vec<(Lsn, String)>,
    last_lsn: Lsn,
}

impl Model {
    fn expected(&self) -> Vec<(EntryKind, String)> {
        let mut v: Vec<_> = self
            .state
            .iter()
            .map(|s| (EntryKind::Checkpoint, s.clone()))
            .collect();
        v.extend(self.data.iter().map(|(_, s)| (EntryKind::Data, s.clone())));
        v
    }
}

async fn open_and_check(store: &MemStore, model: &Model) -> Wal {
    let (wal, rec) = Wal::open(store.clone(), WalOptions::default().read_chunk(3, 64))
        .await
        .expect("open");
    let got: Vec<(EntryKind, String)> = rec
        .map(|e| {
            let e = e.expect("recovery entry");
            (e.kind, String::from_utf8(e.payload.to_vec()).expect("utf8"))
        })
        .collect()
        .await;
    assert_eq!(got, model.expected(), "recovery contract");
    wal
}

async fn crash(store: &MemStore, wal: Wal) {
    wal.simulate_crash().await;
    store.crash();
}

async fn run(ops: Vec<Op>) {
    let store = MemStore::new();
    let mut model = Model::default();
    let mut wal = open_and_check(&store, &model).await;
    let mut n = 0u32;
    let mut name = |p: &str| {
        n += 1;
        format!("{p}{n}")
    };
    for op in ops {
        match op {
            Op::Append => {
                let p = name("d");
                let lsn = wal.append(p.clone()).await.expect("append");
                assert!(lsn > model.last_lsn, "lsns strictly increase");
                model.last_lsn = lsn;
                model.data.push((lsn, p));
            }
            Op::Batch(k) => {
                let ps: Vec<String> = (0..k).map(|_| name("b")).collect();
                let lsns = wal.append_batch(ps.clone()).await.expect("batch");
                assert!(lsns[0] > model.last_lsn);
                model.last_lsn = *lsns.last().expect("non-empty");
                model.data.extend(lsns.into_iter().zip(ps));
            }
            Op::Checkpoint {
                state,
                during,
                outcome,
            } => {
                let mut cp = wal.begin_checkpoint().await.expect("begin");
                let begin = cp.begin_lsn();
                let mut entries = Vec::new();
                for i in 0..state.max(during) {
                    if i < state {
                        let s = name("s");
                        cp.append(s.clone()).await.expect("cp append");
                        entries.push(s);
                    }
                    if i < during {
                        let p = name("d");
                        let lsn = wal.append(p.clone()).await.expect("append during");
                        model.data.push((lsn, p));
                    }
                }
                match outcome {
                    Outcome::Commit => {
                        model.last_lsn = cp.commit().await.expect("commit");
                        model.state = entries;
                        model.data.retain(|(lsn, _)| *lsn > begin);
                    }
                    Outcome::Abort => {
                        cp.abort().await.expect("abort");
                        model.last_lsn = wal.last_lsn().expect("not empty");
                    }
                    Outcome::Drop => {
                        drop(cp);
                        wal.sync().await.expect("sync");
                        model.last_lsn = wal.last_lsn().expect("not empty");
                    }
                    Outcome::Crash => {
                        model.last_lsn = wal.durable_lsn();
                        crash(&store, wal).await;
                        drop(cp);
                        wal = open_and_check(&store, &model).await;
                    }
                }
            }
            Op::FailThenCrash => {
                store.inject(MemFault::FailAppend(1));
                let e = wal
                    .append(name("lost"))
                    .await
                    .expect_err("injected failure");
                assert!(matches!(e, wal_core::Error::Poisoned { .. }));
                crash(&store, wal).await;
                wal = open_and_check(&store, &model).await;
            }
            Op::Trim => {
                // Trimming is clamped to what recovery needs; below that it
                // drops old data, which the model follows.
                let to = model.data.get(model.data.len() / 2).map(|(l, _)| *l);
                if let Some(to) = to {
                    let point = wal.trim_before(to).await.expect("trim");
                    assert!(point <= to, "trim never goes past the asked point");
                    // The store may keep more; recovery yields what it kept.
                    let first = wal.first_lsn().expect("the last record is always kept");
                    assert!(first <= point);
                    model.data.retain(|(lsn, _)| *lsn >= first);
                }
            }
            Op::Reopen { crash: c } => {
                if c {
                    crash(&store, wal).await;
                } else {
                    wal.close().await.expect("close");
                }
                wal = open_and_check(&store, &model).await;
            }
        }
    }
    crash(&store, wal).await;
    let wal = open_and_check(&store, &model).await;
    wal.close().await.expect("close");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn recovery_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(run(ops));
    }
}

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::doctor::{diagnose, Finding};
use super::*;
use crate::plan::{CallShape, Planner};
use crate::schedule::CollSpec;
use crate::topology::Topology;

fn header(kind: Collective, seq: u64, count: u64) -> OpHeader {
    OpHeader {
        kind,
        dtype: DataType::F32,
        op: ReduceOp::Sum,
        root: 0,
        count,
        seq,
    }
}

/// A prepared all-reduce plan of rank 1 of 4, and its algorithm.
fn plan() -> (Arc<Prepared>, &'static str) {
    let mut p = Planner::new(&Config::default(), Topology::single_host(4), 1).unwrap();
    let prep = p
        .prepare(&CallShape {
            spec: CollSpec {
                kind: Collective::AllReduce,
                world: 4,
                count: 1000,
                root: 0,
            },
            esize: 4,
            op: ReduceOp::Sum,
            in_place: true,
            p2p: None,
            uneven: None,
            premul: false,
        })
        .unwrap();
    (prep, p.last_algorithm())
}

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrocoll-fr-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn the_ring_keeps_the_last_n_calls() {
    let r = Recorder::new(4, 0, 2, 0, None);
    assert!(r.entries().is_empty());
    for seq in 0..10 {
        let id = r.queued(&header(Collective::AllReduce, seq, 2), None);
        assert_eq!(id, seq);
        r.finished(id, &Ok(()));
    }
    let e = r.entries();
    assert_eq!(e.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8, 9]);
    assert_eq!(e.iter().map(|e| e.id).collect::<Vec<_>>(), [6, 7, 8, 9]);
    assert!(e.iter().all(|e| e.state == EntryState::Completed));
    // A hook for a call whose slot was reused changes nothing.
    r.finished(2, &Err(Error::Aborted));
    assert!(r.entries().iter().all(|e| e.error.is_none()));
}

#[test]
fn states_follow_the_call() {
    let (prep, algo) = plan();
    assert!(!algo.is_empty());
    let r = Recorder::new(8, 1, 4, 0, None);
    let a = r.queued(&header(Collective::AllReduce, 0, 1000), None);
    let b = r.queued(&header(Collective::SendRecv, 3, 5), Some((2, true)));
    let state = |id: u64| r.entries()[id as usize].clone();
    assert_eq!(state(a).state, EntryState::Queued);
    assert_eq!((state(a).started_us, state(a).finished_us), (None, None));
    r.started(a, algo, &prep);
    let s = state(a);
    assert_eq!(s.state, EntryState::Started);
    assert_eq!(s.algorithm, algo);
    assert!(!s.peers.is_empty() && s.peers.iter().all(|&p| p < 4 && p != 1));
    assert_eq!(s.peers_total, s.peers.len());
    assert!(s.started_us.unwrap() >= s.queued_us);
    r.finished(a, &Ok(()));
    let s = state(a);
    assert_eq!(s.state, EntryState::Completed);
    assert!(s.finished_us.unwrap() >= s.started_us.unwrap());
    let timeout = Error::Timeout {
        rank: 1,
        seq: 3,
        peers: vec![2],
        waited: Duration::from_secs(1),
    };
    r.comm_failed(b, &timeout);
    let s = state(b);
    assert_eq!(s.state, EntryState::Failed);
    assert_eq!(
        s.p2p,
        Some(P2p {
            peer: 2,
            send: true
        })
    );
    assert!(s.error.as_deref().unwrap().contains("timed out"), "{s:?}");
    // The engine's later `finished` with the same call's error keeps the first text.
    r.finished(b, &Err(Error::Aborted));
    assert!(state(b).error.unwrap().contains("timed out"));
}

#[test]
fn a_failure_dump_round_trips_through_the_parser() {
    let dir = scratch_dir("failure");
    let r = Recorder::new(8, 1, 3, 7, Some(dir.clone()));
    let (prep, algo) = plan();
    let id = r.queued(&header(Collective::AllReduce, 0, 1000), None);
    r.started(id, algo, &prep);
    r.finished(id, &Ok(()));
    let id = r.queued(&header(Collective::AllReduce, 1, 1000), None);
    r.started(id, algo, &prep);
    let e = Error::Timeout {
        rank: 1,
        seq: 1,
        peers: vec![2],
        waited: Duration::from_secs(1),
    };
    r.comm_failed(id, &e);
    let path = dir.join(r.file_name());
    assert!(path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("fr-rank1-pid"));
    let mut back = parse_dump(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(back.reason, DumpReason::Timeout);
    assert_eq!((back.rank, back.world, back.comm), (1, 3, 7));
    assert_eq!(back.failure.as_deref(), Some(e.to_string().as_str()));
    assert_eq!(back.entries.len(), 2);
    assert_eq!(back.entries[1].state, EntryState::Failed);
    // Same content as a fresh snapshot, apart from when it was taken. Each snapshot measures
    // the tick rate anew, so the same tick can round to a microsecond either side: times are
    // compared within that rounding, everything else exactly.
    let mut now = r.snapshot(DumpReason::Timeout, Some(e.to_string()));
    now.dumped_us = back.dumped_us;
    assert_eq!(back.entries.len(), now.entries.len());
    let close = |a: u64, b: u64| a.abs_diff(b) <= 2 + a / 100;
    let close_opt = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => close(a, b),
        (a, b) => a == b,
    };
    for (b, n) in back.entries.iter_mut().zip(&now.entries) {
        assert!(close(b.queued_us, n.queued_us), "{b:?} vs {n:?}");
        assert!(close_opt(b.started_us, n.started_us), "{b:?} vs {n:?}");
        assert!(close_opt(b.finished_us, n.finished_us), "{b:?} vs {n:?}");
        (b.queued_us, b.started_us, b.finished_us) = (n.queued_us, n.started_us, n.finished_us);
    }
    assert_eq!(back, now);
    // One failure dump per communicator; no temporary file left behind.
    std::fs::remove_file(&path).unwrap();
    r.comm_failed(id, &Error::Aborted);
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn requested_dumps_and_the_recorder_off() {
    let dir = scratch_dir("request");
    let on = Handle::new(&Config::default(), 0, 1);
    let path = on.dump_to(&dir).unwrap();
    let back = parse_dump(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(back.reason, DumpReason::Request);
    assert!(back.entries.is_empty());
    let off = Handle::new(
        &Config {
            fr_entries: 0,
            ..Config::default()
        },
        0,
        1,
    );
    assert_eq!(off.queued(&header(Collective::Barrier, 0, 0), None), 0);
    assert!(matches!(off.dump_to(&dir), Err(Error::Config { .. })));
    // A directory that cannot be made is an I/O error, not a panic.
    let blocked = path.join("under-a-file");
    assert!(matches!(on.dump_to(&blocked), Err(Error::Io { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_dumps_are_typed_errors() {
    let r = Recorder::new(2, 0, 2, 0, None).snapshot(DumpReason::Request, None);
    let good = serde_json::to_vec(&r).unwrap();
    assert!(parse_dump(&good).is_ok());
    for cut in [0, 1, good.len() / 2, good.len() - 1] {
        assert!(
            matches!(parse_dump(&good[..cut]), Err(DumpError::Parse(_))),
            "cut at {cut}"
        );
    }
    assert!(matches!(
        parse_dump(b"\xff\xfe garbage"),
        Err(DumpError::Parse(_))
    ));
    let mut v2 = r.clone();
    v2.version = 2;
    assert!(matches!(
        parse_dump(&serde_json::to_vec(&v2).unwrap()),
        Err(DumpError::Version { found: 2 })
    ));
    let mut odd = r;
    odd.rank = 5;
    assert!(matches!(
        parse_dump(&serde_json::to_vec(&odd).unwrap()),
        Err(DumpError::Inconsistent(_))
    ));
}

/// Found by reading, confirmed with the flight_record fuzz target
/// (fuzz/corpus/flight_record/regress-huge_world): the doctor lists the ranks of a world
/// that sent no dump, so a dump claiming 10^12 ranks made it run out of time and memory.
#[test]
fn a_dump_of_a_huge_world_is_refused() {
    let mut r = Recorder::new(2, 0, 2, 0, None).snapshot(DumpReason::Request, None);
    r.world = MAX_DUMP_WORLD;
    assert_eq!(parse_dump(&serde_json::to_vec(&r).unwrap()).unwrap(), r);
    for world in [MAX_DUMP_WORLD + 1, 1_000_000_000_000, usize::MAX] {
        r.world = world;
        let e = parse_dump(&serde_json::to_vec(&r).unwrap()).unwrap_err();
        assert!(matches!(e, DumpError::Inconsistent(_)), "{e}");
    }
}

/// A synthetic dump of `rank` of `world`: completed collectives `0..done`, then the calls
/// in `open` (started, not completed), each an all-reduce of 2 f32 unless `odd` names one.
fn record(rank: usize, world: usize, done: u64, open: &[u64], odd: Option<u64>) -> FlightRecord {
    let mut r = Recorder::new(64, rank, world, 0, None).snapshot(DumpReason::Signal, None);
    let entry = |seq: u64, state: EntryState| RecordEntry {
        id: seq,
        seq,
        p2p: None,
        collective: if odd == Some(seq) {
            "broadcast".into()
        } else {
            "all_reduce".into()
        },
        dtype: "f32".into(),
        count: 2,
        op: "sum".into(),
        root: 0,
        algorithm: "ring".into(),
        peers: vec![],
        peers_total: 0,
        state,
        error: None,
        queued_us: seq * 10,
        started_us: Some(seq * 10 + 1),
        finished_us: (state == EntryState::Completed).then_some(seq * 10 + 5),
    };
    r.entries = (0..done).map(|s| entry(s, EntryState::Completed)).collect();
    r.entries
        .extend(open.iter().map(|&s| entry(s, EntryState::Started)));
    r
}

#[test]
fn the_doctor_finds_nothing_in_a_healthy_job() {
    let recs: Vec<_> = (0..3).map(|r| record(r, 3, 5, &[], None)).collect();
    let rep = diagnose(&recs);
    assert_eq!(rep.len(), 1);
    assert!(rep[0].healthy(), "{:?}", rep[0].findings);
    assert_eq!(rep[0].ranks[2].last_completed, Some(4));
}

#[test]
fn the_doctor_names_the_rank_that_never_started_the_call() {
    // Ranks 0 and 2 wait in #5; rank 1 stopped after #4.
    let recs = vec![
        record(0, 3, 5, &[5], None),
        record(1, 3, 5, &[], None),
        record(2, 3, 5, &[5], None),
    ];
    let f = &diagnose(&recs)[0].findings;
    assert_eq!(f.len(), 1, "{f:?}");
    match &f[0] {
        Finding::NotStarted {
            seq,
            ranks,
            waiting,
            ..
        } => {
            assert_eq!(
                (*seq, ranks.as_slice(), waiting.as_slice()),
                (5, &[1][..], &[0, 2][..])
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(f[0]
        .describe()
        .contains("rank(s) 1 never started collective #5"));
}

#[test]
fn the_doctor_names_a_stuck_rank_and_one_behind() {
    // Rank 1 is stuck in #3 that ranks 0 and 2 completed (a broadcast root moved on).
    let recs = vec![
        record(0, 3, 6, &[], None),
        record(1, 3, 3, &[3], None),
        record(2, 3, 6, &[], None),
    ];
    let f = &diagnose(&recs)[0].findings;
    assert_eq!(
        f,
        &[Finding::Stuck {
            rank: 1,
            seq: 3,
            call: "all_reduce(count=2, f32, sum)".into()
        }]
    );
    // Rank 2 is idle after #3 while the others completed #6: behind.
    let recs = vec![
        record(0, 3, 7, &[], None),
        record(1, 3, 7, &[], None),
        record(2, 3, 4, &[], None),
    ];
    let f = &diagnose(&recs)[0].findings;
    assert_eq!(
        f,
        &[Finding::Behind {
            rank: 2,
            last_completed: Some(3),
            others: 6
        }]
    );
    // Every rank inside #4 and none done.
    let recs: Vec<_> = (0..2).map(|r| record(r, 2, 4, &[4], None)).collect();
    assert!(matches!(
        diagnose(&recs)[0].findings[..],
        [Finding::AllStuck { seq: 4, .. }]
    ));
}

#[test]
fn the_doctor_names_a_mismatch_and_missing_dumps() {
    let recs = vec![
        record(0, 4, 3, &[3], None),
        record(1, 4, 3, &[3], Some(3)),
        record(2, 4, 3, &[3], None),
    ];
    let f = &diagnose(&recs)[0].findings;
    assert_eq!(f[0], Finding::Missing { ranks: vec![3] });
    match &f[1] {
        Finding::Mismatch { seq: 3, calls } => {
            assert_eq!(calls.len(), 2);
            assert!(calls
                .iter()
                .any(|(c, r)| c.starts_with("broadcast") && r == &[1]));
            assert!(calls
                .iter()
                .any(|(c, r)| c.starts_with("all_reduce") && r == &[0, 2]));
        }
        other => panic!("{other:?}"),
    }
    // Dumps of two communicators are analysed apart.
    let mut other = record(0, 2, 1, &[], None);
    other.comm = 1;
    let mut recs = recs;
    recs.push(other);
    assert_eq!(diagnose(&recs).len(), 2);
}

#[test]
fn an_engine_records_its_calls() {
    let cfg = Config {
        fr_entries: 8,
        ..Config::default()
    };
    let dir = scratch_dir("engine");
    let out = crate::World::new(3)
        .config(cfg)
        .run(|c| {
            for _ in 0..10 {
                let mut v = [1f32; 4];
                c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
            }
            c.barrier().unwrap();
            c.dump_flight_record(&dir).unwrap()
        })
        .unwrap();
    let recs: Vec<FlightRecord> = out
        .iter()
        .map(|p| parse_dump(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    for (rank, r) in recs.iter().enumerate() {
        assert_eq!((r.rank, r.world), (rank, 3));
        assert_eq!(r.entries.len(), 8);
        let last = r.entries.last().unwrap();
        assert_eq!((last.seq, last.collective.as_str()), (10, "barrier"));
        let first = &r.entries[0];
        assert_eq!((first.seq, first.count), (3, 4));
        assert!(r.entries.iter().all(|e| e.state == EntryState::Completed
            && !e.algorithm.is_empty()
            && !e.peers.is_empty()
            && !e.peers.contains(&rank)));
    }
    // (Threads of one process that make worlds at once may number their communicators
    // differently: group these dumps as one.)
    let mut recs = recs;
    recs.iter_mut().for_each(|r| r.comm = 0);
    assert!(diagnose(&recs)[0].healthy());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_clock_turns_ticks_into_microseconds() {
    let c = clock::Clock::new();
    let a = c.ticks();
    std::thread::sleep(Duration::from_millis(20));
    let b = c.ticks();
    let (us, now) = c.micros();
    let (a, b) = (us(a), us(b));
    assert!(
        b >= a + 19_000 && b <= now && now < 5_000_000,
        "{a} {b} {now}"
    );
}

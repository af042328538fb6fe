//! The seed inputs of this crate's fuzz targets, made by the real encoders: a few valid
//! encodings per target and a few edge cases. `tests/fuzz_corpus.rs` writes them to
//! `fuzz/corpus/<target>/seed-<name>` (with `FC_WRITE_SEEDS=1`) and replays them.

use std::net::SocketAddr;
use std::time::Duration;

use ferrocoll_transports::plugin::AddressBlob;

use crate::bootstrap::wire::{self, Request, Response};
use crate::compress::{chunk_codec, Codec};
use crate::exec::frame::{Frame, OpHeader};
use crate::ft::agree::Decision;
use crate::ft::wire::{Datagram, Kind};
use crate::recorder::{DumpReason, EntryState, FlightRecord, P2p, RecordEntry};
use crate::schedule::Collective;
use crate::topology::{json, Topology};
use crate::types::{DataType, ReduceOp};

/// One seed: the target, a name for its file, the bytes.
pub type Seed = (&'static str, String, Vec<u8>);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a literal address")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Adds one seed: its target, its name, its bytes.
type Add<'a> = dyn FnMut(&'static str, &str, Vec<u8>) + 'a;

/// `(target, name, bytes)` for every seed of this crate's targets.
pub fn seeds() -> Vec<Seed> {
    let mut s: Vec<Seed> = Vec::new();
    let mut add = |t: &'static str, name: &str, b: Vec<u8>| s.push((t, name.to_string(), b));
    ids_and_frames(&mut add);
    store_protocol(&mut add);
    store_values_and_ft(&mut add);
    topology_and_codecs(&mut add);
    config_vars(&mut add);
    flight_records(&mut add);
    s
}

/// The unique ids and the frames of the data links.
fn ids_and_frames(add: &mut Add) {
    for (name, store, token) in [
        ("v4", "10.0.0.7:29500", 0x1234_5678_9abc_def1),
        ("v6", "[fe80::1]:1", u64::MAX),
    ] {
        let id = crate::UniqueId {
            store: addr(store),
            token,
            secret: [0x5a; 32],
        };
        add("unique_id", name, id.to_bytes().to_vec());
    }
    add("unique_id", "zeros", vec![0; crate::UNIQUE_ID_BYTES]);

    let op = OpHeader {
        kind: Collective::AllReduce,
        dtype: DataType::F32,
        op: ReduceOp::Sum,
        root: 0,
        count: 1 << 20,
        seq: 41,
    };
    let bcast = OpHeader {
        kind: Collective::Broadcast,
        dtype: DataType::BF16,
        root: 3,
        ..op
    };
    for (name, f) in [
        ("all_reduce", (op, 4096, None)),
        ("broadcast", (bcast, 0, None)),
        ("single_copy", (op, 1 << 16, Some(0x7f00_dead_b000))),
    ] {
        let frame = Frame {
            op: f.0,
            len: f.1,
            single_copy: f.2,
        };
        add("frame", name, frame.encode().to_vec());
    }
}

/// The store's requests, sessions, answers and hellos, and etcd's answers.
fn store_protocol(add: &mut Add) {
    let requests = [
        Request::Set {
            key: "fc/rank/0".into(),
            value: b"host\n1".to_vec(),
        },
        Request::Get {
            key: "fc/job_token".into(),
            timeout: Duration::from_secs(300),
        },
        Request::Add {
            key: "fc/arrived".into(),
            delta: 1,
        },
        Request::Wait {
            keys: vec!["a".into(), "b".into()],
            timeout: Duration::from_millis(5),
        },
        Request::CompareSet {
            key: "fc/decision".into(),
            expected: None,
            new: b"0:1,2".to_vec(),
        },
        Request::CompareSet {
            key: "k".into(),
            expected: Some(b"old".to_vec()),
            new: b"new".to_vec(),
        },
    ];
    let mut session = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        add("store_request", &format!("op{i}"), r.encode());
        let r = match r {
            Request::Get { key, .. } => Request::Get {
                key: key.clone(),
                timeout: Duration::ZERO,
            },
            r => r.clone(),
        };
        wire::write_frame(&mut session, &r.encode()).expect("writes to a vector");
    }
    add("store_server", "session", session);
    let mut counters = Vec::new();
    for delta in [5, -7, i64::MAX] {
        let r = Request::Add {
            key: "c".into(),
            delta,
        };
        wire::write_frame(&mut counters, &r.encode()).expect("writes to a vector");
    }
    add("store_server", "counters", counters);
    for (name, r) in [
        ("ok", Response::Ok(b"value".to_vec())),
        ("timeout", Response::Timeout("fc/rank/3".into())),
        ("error", Response::Error("counter \"c\" overflows".into())),
    ] {
        add("store_response", name, r.encode());
    }

    let nonce = [7u8; 32];
    let mut client = vec![0];
    client.extend(wire::encode_hello(&nonce));
    client.extend([9u8; 32]);
    add("store_hello", "client_hello", client);
    let mut challenge = vec![1, wire::HELLO_CHALLENGE];
    challenge.extend([3u8; 64]);
    challenge.push(wire::HELLO_OK);
    add("store_hello", "server_challenge", challenge);
    add(
        "store_hello",
        "bad_version",
        vec![1, wire::HELLO_BAD_VERSION],
    );

    for (name, answer) in [
        (
            "range",
            r#"{"header":{"revision":"9"},"kvs":[{"key":"Zm9v","create_revision":"8","mod_revision":"9","version":"2","value":"NDI="}],"count":"1"}"#,
        ),
        ("range_empty", r#"{"header":{"revision":"9"}}"#),
        (
            "txn_done",
            r#"{"header":{"revision":"10"},"succeeded":true,"responses":[{"response_put":{}}]}"#,
        ),
        (
            "txn_lost",
            r#"{"responses":[{"response_range":{"kvs":[{"key":"Zm9v","mod_revision":7}],"count":"1"}}]}"#,
        ),
    ] {
        add("etcd_answer", name, answer.as_bytes().to_vec());
    }
}

/// The values ranks keep in the store, and the failure detector's datagrams and decisions.
fn store_values_and_ft(add: &mut Add) {
    let tcp = AddressBlob::new("tcp", 1, b"10.0.0.1:41000");
    let shm = AddressBlob::new("shm", 1, &[]);
    let record = format!(
        "node7\n10.0.0.1:41000\n4242\n8\n0,1,2,3\n10.0.0.1:41001\nshm,tcp\nshm={} tcp={}",
        hex(&shm.0),
        hex(&tcp.0)
    );
    let mut values = vec![
        ("record", 0u8, record.into_bytes()),
        ("counter", 1, b"42".to_vec()),
        ("grow", 2, b"3\n5\nfc/g7/".to_vec()),
        ("admission", 3, b"fc/g7/\n4\n6".to_vec()),
    ];
    values.push(("record_minimal", 0, b"h\n-\n\n\n\n\n\n".to_vec()));
    for (name, which, v) in values {
        let mut b = vec![which];
        b.extend(v);
        add("store_values", name, b);
    }

    for (name, kind) in [
        ("heartbeat", Kind::Heartbeat),
        (
            "revoke",
            Kind::Revoke {
                by: 1,
                failed: vec![0, 2],
            },
        ),
        ("goodbye", Kind::Goodbye),
    ] {
        let d = Datagram {
            token: 0xfeed,
            seq: 3,
            from: 1,
            kind,
        };
        // A world of 3, then the body: the target appends the tag.
        let mut b = 2u16.to_le_bytes().to_vec();
        let key = ferrocoll_transports::auth::JobKey::new(b"the fuzzed job's key");
        let mut e = d.encode(&key);
        e.truncate(e.len() - ferrocoll_transports::auth::PROOF_BYTES);
        b.extend(e);
        add("heartbeat", name, b);
    }
    let d = Decision {
        epoch: 2,
        members: vec![0, 2],
        prefix: "fc/g3/".into(),
    };
    let mut b = vec![2, 0, 2]; // a world of 3, epoch 2
    b.extend(d.encode());
    add("decision", "members", b);
}

/// Topology files and codec payloads.
fn topology_and_codecs(add: &mut Add) {
    let mut t = Topology::uniform(2, 2, true);
    t.source = Some("seed".into());
    add("topology_json", "uniform", json::to_json(&t).into_bytes());
    let doc = r#"{"format": "ferrocoll-topology", "version": 1, "source": "doc",
      "world_size": 4,
      "intra_host": { "latency_us": 0.5, "bandwidth_gbit_s": 160 },
      "inter_host": { "latency_us": 40, "bandwidth_gbit_s": 1 },
      "nic_gbit_s": 1,
      "hosts": [ { "name": "a", "ranks": [0, 2], "cores": 2 },
                 { "name": "b", "ranks": [1, 3], "nic_gbit_s": 1, "intra_total_gbit_s": 88 } ],
      "host_links": [ { "a": "a", "b": "b", "latency_us": 40, "bandwidth_gbit_s": 0.5 } ] }"#;
    add("topology_json", "documented", doc.as_bytes().to_vec());

    let x: Vec<f32> = (0..300)
        .map(|i| (i as f32 * 0.37).sin() * 10f32.powi(i % 7 - 3))
        .collect();
    for (i, codec) in [
        Codec::Fp16,
        Codec::Bf16,
        Codec::Fp8E4M3 { block: 64 },
        Codec::Fp8E5M2 { block: 64 },
        Codec::OneBit { block: 64 },
        Codec::TopK { fraction: 0.125 },
    ]
    .into_iter()
    .enumerate()
    {
        let c = chunk_codec(codec).expect("a valid codec");
        let n = x.len();
        let mut b = vec![i as u8, 63, n as u8, (n >> 8) as u8];
        let start = b.len();
        b.resize(start + c.encoded_len(n), 0);
        c.encode(&x, &mut b[start..]);
        add("codec", &codec.to_string().replace(':', "_"), b);
    }
}

/// Configuration values.
fn config_vars(add: &mut Add) {
    let config = |pairs: &[(&str, &str)]| {
        let mut b = Vec::new();
        for (var, value) in pairs {
            let i = CONFIG_VARS
                .iter()
                .position(|v| v == var)
                .expect("a known var");
            b.extend([i as u8, value.len() as u8]);
            b.extend(value.as_bytes());
        }
        b
    };
    let typical = [
        ("FERROCOLL_ALGO", "all_reduce:ring;all_gather:direct"),
        ("FERROCOLL_TIMEOUT", "30.5"),
        ("FERROCOLL_HEARTBEAT_TIMEOUT", "0"),
        ("FERROCOLL_COMPRESSION", "fp8:64"),
        ("FERROCOLL_TRANSPORT", "shm,tcp"),
        ("FERROCOLL_SEGMENT_BYTES", "65536"),
        ("FERROCOLL_FR_ENTRIES", "16"),
        ("FERROCOLL_RANK", "1"),
        ("FERROCOLL_WORLD_SIZE", "4"),
        ("FERROCOLL_STORE", "tcp://10.0.0.1:29400"),
    ];
    add("config", "typical", config(&typical));
    let torchrun = [
        ("RANK", "2"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "0"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "18446744073709551615"),
        ("FERROCOLL_DEBUG", "info"),
    ];
    add("config", "torchrun_port_overflow", config(&torchrun));
    let long = format!("0{}", "2".repeat(70));
    add(
        "config",
        "timeout_overflow",
        config(&[("FERROCOLL_HEARTBEAT_TIMEOUT", &long)]),
    );
}

/// A flight recorder dump.
fn flight_records(add: &mut Add) {
    let entry = RecordEntry {
        id: 7,
        seq: 7,
        p2p: None,
        collective: "all_reduce".into(),
        dtype: "f32".into(),
        count: 2,
        op: "sum".into(),
        root: 0,
        algorithm: "ring".into(),
        peers: vec![1, 3],
        peers_total: 2,
        state: EntryState::Started,
        error: None,
        queued_us: 10,
        started_us: Some(12),
        finished_us: None,
    };
    let send = RecordEntry {
        p2p: Some(P2p {
            peer: 1,
            send: true,
        }),
        state: EntryState::Failed,
        error: Some("peer 1 failed".into()),
        finished_us: Some(99),
        ..entry.clone()
    };
    let record = FlightRecord {
        version: crate::recorder::SCHEMA_VERSION,
        rank: 0,
        world: 4,
        comm: 0,
        pid: 1234,
        host: "node7".into(),
        reason: DumpReason::Timeout,
        failure: Some("collective #7 timed out".into()),
        created_unix_us: 1_767_225_600_000_000,
        dumped_us: 5_300_000,
        entries: vec![entry, send],
    };
    let text = serde_json::to_vec_pretty(&record).expect("a record serialises");
    add("flight_record", "timeout", text);
}

/// The variables of the `config` target, by index (an input names a variable by its index).
pub(super) const CONFIG_VARS: &[&str] = &[
    "FERROCOLL_ALGO",
    "FERROCOLL_SEGMENT_BYTES",
    "FERROCOLL_TIMEOUT",
    "FERROCOLL_HEARTBEAT_TIMEOUT",
    "FERROCOLL_SPIN_US",
    "FERROCOLL_YIELD_WHEN_IDLE",
    "FERROCOLL_SHM_DIRECT",
    "FERROCOLL_DIRECT_MIN_BYTES",
    "FERROCOLL_SINGLE_COPY_REDUCTIONS",
    "FERROCOLL_STREAMING_MIN_BYTES",
    "FERROCOLL_TRANSPORT",
    "FERROCOLL_RING_ORDER",
    "FERROCOLL_TOPO_FILE",
    "FERROCOLL_TOPO_DUMP_FILE",
    "FERROCOLL_HOSTNAME",
    "FERROCOLL_SOCKET_IFNAME",
    "FERROCOLL_SECRET",
    "FERROCOLL_SHM_RING_BYTES",
    "FERROCOLL_DEBUG",
    "FERROCOLL_COMPRESSION",
    "FERROCOLL_FR_DIR",
    "FERROCOLL_FR_ENTRIES",
    "FERROCOLL_RANK",
    "FERROCOLL_WORLD_SIZE",
    "FERROCOLL_LOCAL_RANK",
    "FERROCOLL_LOCAL_WORLD_SIZE",
    "FERROCOLL_STORE",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "PMI_RANK",
    "PMI_SIZE",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "FERROCOLL_TLS",
];

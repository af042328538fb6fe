//! Configuration values (src/config): `Config::from_vars` and the launcher variables'
//! `launcher::detect` over arbitrary values of every variable they read (except
//! `FERROCOLL_SECRET_FILE`, a path the fuzzer must not make them read). Accepted values are
//! within their documented bounds, and the values with a spelling (codec, transport list)
//! survive a round trip through it.
//!
//! Input: records of (variable index, value length, value bytes).
#![no_main]

use ferrocoll::config::{launcher, Codec, CompressionSetting, Config, TransportChoice};

const VARS: &[&str] = &[
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
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut vars: Vec<(&str, String)> = Vec::new();
    let mut rest = data;
    while let Some((&[var, len], tail)) = rest.split_first_chunk::<2>() {
        let (value, tail) = tail.split_at(usize::from(len).min(tail.len()));
        vars.push((
            VARS[usize::from(var) % VARS.len()],
            String::from_utf8_lossy(value).into(),
        ));
        rest = tail;
    }
    // The last value of a variable wins, as in an environment built by assignments.
    let get = |k: &str| {
        vars.iter()
            .rev()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
    };

    if let Ok(c) = Config::from_vars(get) {
        assert!(c.segment_bytes >= 1 && c.shm_ring_bytes >= 4096);
        assert!(!c.timeout.is_zero());
        assert!(c.fr_entries <= ferrocoll::config::FR_ENTRIES_MAX);
        if let CompressionSetting::Fixed(codec) = c.compression {
            codec.validate().expect("an accepted codec is valid");
            let again: Codec = codec
                .to_string()
                .parse()
                .expect("a codec's spelling parses");
            assert_eq!(again, codec);
        }
        let spec = c.transport.spec();
        assert_eq!(
            TransportChoice::parse(&spec),
            Ok(c.transport.clone()),
            "{spec}"
        );
        if let Some(v) = get("FERROCOLL_ALGO") {
            let again = Config::default().with_algo(&v).expect("accepted once");
            assert_eq!(again.algo, c.algo);
        }
    }
    if let Ok(Some(env)) = launcher::detect(get) {
        assert!(env.rank < env.world, "{env:?}");
        if let (Some(l), Some(w)) = (env.local_rank, env.local_world) {
            assert!(l < w && w <= env.world, "{env:?}");
        }
        assert!(env.store.contains(':'), "{env:?}");
    }
});

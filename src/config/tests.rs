//! Unit tests of the configuration: every variable, its defaults and its errors.

use super::*;

fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn the_secret_comes_from_the_variable_or_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("fc-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("secret");
    let path = f.to_str().unwrap();
    std::fs::write(&f, "from-the-file\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = Config::from_vars(vars(&[("FERROCOLL_SECRET_FILE", path)])).unwrap();
    assert_eq!(c.secret.as_deref(), Some("from-the-file"));
    let c = Config::from_vars(vars(&[("FERROCOLL_SECRET", "direct")])).unwrap();
    assert_eq!(c.secret.as_deref(), Some("direct"));
    let refused = |pairs: &[(&str, &str)], why: &str| {
        let e = Config::from_vars(vars(pairs)).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(&e, Error::Config { var, .. } if var == "FERROCOLL_SECRET_FILE")
                && text.contains(why),
            "{text}"
        );
    };
    refused(
        &[("FERROCOLL_SECRET", "x"), ("FERROCOLL_SECRET_FILE", path)],
        "set one",
    );
    let missing = dir.join("missing");
    refused(
        &[("FERROCOLL_SECRET_FILE", missing.to_str().unwrap())],
        "cannot read",
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&[("FERROCOLL_SECRET_FILE", path)], "chmod 600");
    std::fs::write(&f, "\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(&[("FERROCOLL_SECRET_FILE", path)], "empty");
    std::fs::write(&f, [0xff, 0xfe]).unwrap();
    refused(&[("FERROCOLL_SECRET_FILE", path)], "UTF-8");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reads_and_rejects() {
    let c = Config::from_vars(vars(&[
        ("FERROCOLL_ALGO", "ring"),
        ("FERROCOLL_TIMEOUT", "1.5"),
    ]))
    .unwrap();
    assert_eq!(c.algo, AlgoChoice::Forced("ring".into()));
    assert_eq!(c.timeout, Duration::from_millis(1500));
    let e = Config::from_vars(vars(&[("FERROCOLL_ALGO", "bogus")])).unwrap_err();
    assert!(e.to_string().contains("FERROCOLL_ALGO"), "{e}");
    assert!(Config::from_vars(vars(&[("FERROCOLL_TIMEOUT", "-1")])).is_err());
    for bad in ["-1", "soon", "inf", "NaN"] {
        let e = Config::from_vars(vars(&[("FERROCOLL_HEARTBEAT_TIMEOUT", bad)])).unwrap_err();
        assert!(e.to_string().contains("FERROCOLL_HEARTBEAT_TIMEOUT"), "{e}");
    }
    // Found by fuzzing (fuzz/corpus/config): seconds beyond what a Duration holds
    // panicked, and a positive timeout below a nanosecond became zero.
    for var in ["FERROCOLL_TIMEOUT", "FERROCOLL_HEARTBEAT_TIMEOUT"] {
        for bad in [format!("0{}", "2".repeat(70)), "1e20".into()] {
            let e = Config::from_vars(vars(&[(var, &bad)]))
                .map(|_| ())
                .unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
    }
    assert!(Config::from_vars(vars(&[("FERROCOLL_TIMEOUT", "1e-300")])).is_err());
    let c = Config::from_vars(vars(&[("FERROCOLL_HEARTBEAT_TIMEOUT", "0.5")])).unwrap();
    assert_eq!(c.heartbeat_timeout, Duration::from_millis(500));
    assert!(Config::from_vars(vars(&[("FERROCOLL_SEGMENT_BYTES", "0")])).is_err());
    assert!(Config::from_vars(vars(&[("FERROCOLL_SEGMENT_BYTES", "x")])).is_err());
    let e = Config::from_vars(vars(&[("FERROCOLL_STREAMING_MIN_BYTES", "lots")])).unwrap_err();
    assert!(
        e.to_string().contains("FERROCOLL_STREAMING_MIN_BYTES"),
        "{e}"
    );
    let c = Config::from_vars(vars(&[("FERROCOLL_STREAMING_MIN_BYTES", "0")])).unwrap();
    assert_eq!(c.streaming_min_bytes, 0);
    for (v, want) in [("1", true), ("yes", true), ("0", false), ("", false)] {
        let c = Config::from_vars(vars(&[("FERROCOLL_SINGLE_COPY_REDUCTIONS", v)])).unwrap();
        assert_eq!(c.single_copy_reductions, want, "{v:?}");
    }
    assert!(!Config::default().single_copy_reductions);
    let e = Config::from_vars(vars(&[("FERROCOLL_SINGLE_COPY_REDUCTIONS", "maybe")])).unwrap_err();
    assert!(
        e.to_string().contains("FERROCOLL_SINGLE_COPY_REDUCTIONS"),
        "{e}"
    );
    let over = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    let c = Config::from_env_with(&over("FERROCOLL_SEGMENT_BYTES", "4096")).unwrap();
    assert_eq!(c.segment_bytes, 4096);
    let mut two = over("FERROCOLL_SEGMENT_BYTES", "x");
    two.extend(over("FERROCOLL_SEGMENT_BYTES", "8192"));
    assert_eq!(
        Config::from_env_with(&two).unwrap().segment_bytes,
        8192,
        "the last wins"
    );
    let e = Config::from_env_with(&over("FERROCOLL_TIMEOUT", "soon")).unwrap_err();
    assert!(e.to_string().contains("FERROCOLL_TIMEOUT"), "{e}");
    let e = Config::from_vars(vars(&[("FERROCOLL_SHM_DIRECT", "2")])).unwrap_err();
    assert!(e.to_string().contains("FERROCOLL_SHM_DIRECT"), "{e}");
    for (var, value) in [("FERROCOLL_DEVICE", "gpu"), ("FERROCOLL_TLS", "maybe")] {
        let e = Config::from_vars(vars(&[(var, value)])).unwrap_err();
        assert!(e.to_string().contains(var), "{e}");
    }
    let c = Config::from_vars(vars(&[("FERROCOLL_DEVICE", " CUDA ")])).unwrap();
    assert_eq!(c.device, Device::Cuda);
    // TLS asked of a build without it is an error naming the feature.
    let tls = Config::from_vars(vars(&[("FERROCOLL_TLS", "1")]));
    assert_eq!(
        tls.is_ok(),
        ferrocoll_transports::tcp::tls::AVAILABLE,
        "{tls:?}"
    );
    for bad in ["infiniband", "shm,,tcp", "tcp,tcp", "auto,tcp"] {
        let e = Config::from_vars(vars(&[("FERROCOLL_TRANSPORT", bad)])).unwrap_err();
        assert!(e.to_string().contains("FERROCOLL_TRANSPORT"), "{bad}: {e}");
    }
    assert_eq!(
        Config::from_vars(vars(&[("FERROCOLL_TRANSPORT", "tcp")]))
            .unwrap()
            .transport,
        TransportChoice::only("tcp")
    );
    assert_eq!(
        Config::from_vars(vars(&[("FERROCOLL_TRANSPORT", " SHM, ofi ,tcp")]))
            .unwrap()
            .transport,
        TransportChoice::Prefer(vec!["shm".into(), "ofi".into(), "tcp".into()])
    );
    assert!(Config::from_vars(vars(&[("FERROCOLL_DEBUG", "LOUD")])).is_err());
    let level = |v| {
        Config::from_vars(vars(&[("FERROCOLL_DEBUG", v)]))
            .unwrap()
            .log_level
    };
    assert_eq!(level("info"), tracing::Level::INFO);
    assert_eq!(level("TRACE"), tracing::Level::TRACE);
    assert_eq!(level(""), tracing::Level::WARN);
    assert_eq!(Config::default().log_level, tracing::Level::WARN);
}

#[test]
fn per_collective_algorithms_and_ring_order() {
    let c = Config::from_vars(vars(&[
        (
            "FERROCOLL_ALGO",
            "all_reduce:hierarchical; all_gather:direct,broadcast:auto",
        ),
        ("FERROCOLL_RING_ORDER", "rank"),
        ("FERROCOLL_TOPO_FILE", "/tmp/t.json"),
    ]))
    .unwrap();
    assert_eq!(c.algo, AlgoChoice::Auto);
    assert_eq!(c.forced_algo(Collective::AllReduce), Some("hierarchical"));
    assert_eq!(c.forced_algo(Collective::AllGather), Some("direct"));
    assert_eq!(c.forced_algo(Collective::Broadcast), None);
    assert_eq!(c.forced_algo(Collective::Reduce), None);
    assert_eq!(c.ring_order, RingOrder::Rank);
    assert_eq!(c.topo_file, Some(PathBuf::from("/tmp/t.json")));
    let c = Config::default().with_algo("ring").unwrap();
    assert_eq!(c.forced_algo(Collective::Reduce), Some("ring"));
    for (v, says) in [
        ("all_reduce:bogus", "unknown algorithm \"bogus\""),
        ("all_reduce=ring", "unknown algorithm"),
        ("allreduce:ring", "unknown collective \"allreduce\""),
        ("all_reduce:ring;gather", "is not collective:algorithm"),
    ] {
        let e = Config::from_vars(vars(&[("FERROCOLL_ALGO", v)])).unwrap_err();
        assert!(e.to_string().contains(says), "{v}: {e}");
    }
    let e = Config::from_vars(vars(&[("FERROCOLL_RING_ORDER", "fast")])).unwrap_err();
    assert!(e.to_string().contains("FERROCOLL_RING_ORDER"), "{e}");
}

#[test]
fn flight_recorder_variables() {
    let c = Config::default();
    assert_eq!((c.fr_dir, c.fr_entries), (None, 1024));
    let c = Config::from_vars(vars(&[
        ("FERROCOLL_FR_DIR", "/tmp/fr"),
        ("FERROCOLL_FR_ENTRIES", " 16 "),
    ]))
    .unwrap();
    assert_eq!(c.fr_dir, Some(PathBuf::from("/tmp/fr")));
    assert_eq!(c.fr_entries, 16);
    let c = Config::from_vars(vars(&[
        ("FERROCOLL_FR_DIR", ""),
        ("FERROCOLL_FR_ENTRIES", "0"),
    ]))
    .unwrap();
    assert_eq!((c.fr_dir, c.fr_entries), (None, 0));
    for v in ["many", "-1", "", "2000000"] {
        let e = Config::from_vars(vars(&[("FERROCOLL_FR_ENTRIES", v)])).unwrap_err();
        assert!(
            matches!(&e, Error::Config { var, .. } if var == "FERROCOLL_FR_ENTRIES"),
            "{v:?}: {e}"
        );
    }
}

#[test]
fn compression_is_read_with_the_rest() {
    assert_eq!(
        Config::default().compression,
        CompressionSetting::Fixed(Codec::None)
    );
    let c = Config::from_vars(vars(&[("FERROCOLL_COMPRESSION", "fp8e5m2:64")])).unwrap();
    assert_eq!(
        c.compression,
        CompressionSetting::Fixed(Codec::Fp8E5M2 { block: 64 })
    );
    let c = Config::from_vars(vars(&[("FERROCOLL_COMPRESSION", " ")])).unwrap();
    assert_eq!(c.compression, CompressionSetting::Fixed(Codec::None));
    let c = Config::from_vars(vars(&[("FERROCOLL_COMPRESSION", "auto")])).unwrap();
    assert_eq!(c.compression, CompressionSetting::Auto);
    let e = Config::from_vars(vars(&[("FERROCOLL_COMPRESSION", "zstd")])).unwrap_err();
    assert!(e.to_string().contains("FERROCOLL_COMPRESSION"), "{e}");
}

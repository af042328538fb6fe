//! Rendezvous through the store with host identities chosen per rank: ranks on one "host"
//! meet over shared memory, others over TCP, in the same communicator.

use std::time::Duration;

use ferrocoll::config::TransportChoice;
use ferrocoll::launch::LaunchEnv;
use ferrocoll::{Communicator, Config, Error, ReduceOp};

fn free_store() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

fn launch(rank: usize, world: usize, store: &str) -> LaunchEnv {
    LaunchEnv {
        rank,
        world,
        local_rank: None,
        local_world: None,
        store: store.into(),
        source: "test",
    }
}

fn config(host: &str, transport: TransportChoice) -> Config {
    let mut c = Config::default().with_timeout(Duration::from_secs(20));
    c.hostname = Some(host.into());
    c.transport = transport;
    c
}

#[test]
fn two_hosts_mix_shm_and_tcp_in_one_communicator() {
    let store = free_store();
    let hosts = ["hostA", "hostA", "hostB"];
    let res: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|r| {
                let store = &store;
                s.spawn(
                    move || -> ferrocoll::Result<(Vec<&'static str>, Vec<f64>)> {
                        let c = Communicator::from_launch(
                            &launch(r, 3, store),
                            config(hosts[r], TransportChoice::Auto),
                        )?;
                        let mut v: Vec<f64> = (0..100_000).map(|i| (i * (r + 1)) as f64).collect();
                        c.all_reduce(&mut v, ReduceOp::Sum)?;
                        c.barrier()?;
                        Ok((c.transports(), v))
                    },
                )
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want: Vec<f64> = (0..100_000).map(|i| (i * 6) as f64).collect();
    let res: Vec<_> = res.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(res[0].0, vec!["self", "shm", "tcp"]);
    assert_eq!(res[1].0, vec!["shm", "self", "tcp"]);
    assert_eq!(res[2].0, vec!["tcp", "tcp", "self"]);
    assert!(res.iter().all(|(_, v)| *v == want));
}

#[test]
fn forcing_shm_across_hosts_is_a_config_error() {
    let store = free_store();
    let res: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|r| {
                let store = &store;
                let host = if r == 0 { "hostA" } else { "hostB" };
                s.spawn(move || {
                    Communicator::from_launch(
                        &launch(r, 2, store),
                        config(host, TransportChoice::only("shm")),
                    )
                    .err()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in res {
        let e = e.expect("must fail");
        assert!(
            matches!(&e, Error::Config { var, .. } if var == "FERROCOLL_TRANSPORT"),
            "{e:?}"
        );
    }
}

#[test]
fn unreachable_store_fails_within_the_timeout() {
    // Rank 1 of 2 with no rank 0 serving the store.
    let mut cfg = config("h", TransportChoice::Auto);
    cfg.timeout = Duration::from_millis(500);
    let t0 = std::time::Instant::now();
    let e = Communicator::from_launch(&launch(1, 2, &free_store()), cfg)
        .err()
        .expect("must fail");
    assert!(matches!(e, Error::Bootstrap(_)), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(10));
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fc-rdv-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// What a rank of [`meet`] got: its transports, an all-reduce's result, a split's sum.
type Met = ferrocoll::Result<(Vec<&'static str>, Vec<f32>, i64)>;

/// Runs `world` ranks (threads) that meet through `store`, each on its host, and returns
/// what each got.
fn meet(
    store: &str,
    hosts: &[&'static str],
    transport: TransportChoice,
    timeout: Duration,
) -> Vec<Met> {
    let world = hosts.len();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..world)
            .map(|r| {
                let transport = transport.clone();
                s.spawn(move || {
                    let mut cfg = config(hosts[r], transport);
                    cfg.timeout = timeout;
                    // A file store has no address to route by: ranks listen on the first
                    // non-loopback address (or loopback) unless told; with host "a" only,
                    // use that default, else loopback.
                    if hosts.iter().any(|h| *h != "a") {
                        cfg.socket_ifname = Some("lo".into());
                    }
                    let c = Communicator::from_launch(&launch(r, world, store), cfg)?;
                    let mut v = vec![(r + 1) as f32; 4099];
                    c.all_reduce(&mut v, ReduceOp::Sum)?;
                    // A split's children meet through the same store.
                    let child = c.split_by(Some((r % 2) as u32), 0)?.expect("a colour");
                    let mut x = [r as i64];
                    child.all_reduce(&mut x, ReduceOp::Sum)?;
                    Ok((c.transports(), v, x[0]))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn ranks_meet_through_a_file_store_and_it_is_cleared_after() {
    let dir = temp_dir("file");
    let store = format!("file:{}", dir.display());
    for (hosts, transport) in [
        (&["a", "a", "b"][..], TransportChoice::Auto),
        (&["a", "a", "a"][..], TransportChoice::only("tcp")),
    ] {
        let res = meet(&store, hosts, transport.clone(), Duration::from_secs(20));
        for (r, got) in res.into_iter().enumerate() {
            let (transports, v, split_sum) = got.unwrap_or_else(|e| panic!("rank {r}: {e}"));
            assert_eq!(transports.len(), 3);
            let want = if transport == TransportChoice::only("tcp") {
                [
                    ["self", "tcp", "tcp"],
                    ["tcp", "self", "tcp"],
                    ["tcp", "tcp", "self"],
                ]
            } else {
                [
                    ["self", "shm", "tcp"],
                    ["shm", "self", "tcp"],
                    ["tcp", "tcp", "self"],
                ]
            };
            assert_eq!(transports, want[r], "rank {r}");
            assert!(v.iter().all(|&x| x == 6.0), "rank {r}");
            // Colour 0: ranks 0 and 2; colour 1: rank 1.
            assert_eq!(split_sum, if r == 1 { 1 } else { 2 }, "rank {r}");
        }
        // Rank 0 removed the keys once its communicators were gone: the next job can use
        // the same directory (the loop's second round does).
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_store_holding_another_jobs_keys_is_refused() {
    let dir = temp_dir("stale");
    std::fs::create_dir_all(&dir).unwrap();
    // What a crashed job leaves: its token and a rank's address.
    std::fs::write(dir.join("v-fc_2fjob_5ftoken"), 7u64.to_le_bytes()).unwrap();
    std::fs::write(dir.join("v-fc_2frank_2f1"), b"h\n127.0.0.1:9\n1\n1\n").unwrap();
    let store = format!("file:{}", dir.display());
    let t0 = std::time::Instant::now();
    let res = meet(
        &store,
        &["a", "a"],
        TransportChoice::Auto,
        Duration::from_secs(2),
    );
    let e0 = res[0].as_ref().expect_err("rank 0 refuses the directory");
    assert!(
        matches!(e0, Error::Config { var, reason, .. }
            if var == "FERROCOLL_STORE" && reason.contains("already holds")),
        "{e0}"
    );
    // Rank 1 read the stale token: it fails too (within its timeout), never hangs and
    // never joins a wrong job.
    assert!(res[1].is_err());
    assert!(t0.elapsed() < Duration::from_secs(15));
    // A bad spelling is a config error naming the variable.
    let e = Communicator::from_launch(&launch(0, 1, "file:"), config("a", TransportChoice::Auto))
        .err()
        .expect("empty directory name");
    assert!(
        matches!(&e, Error::Config { var, .. } if var == "FERROCOLL_STORE"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

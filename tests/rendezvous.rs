//! Rendezvous through the store with host identities chosen per rank: ranks on one "host"
//! meet over shared memory, others over TCP, in the same communicator.

use std::time::Duration;

use ferrocoll::bootstrap::env::LaunchEnv;
use ferrocoll::config::TransportChoice;
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
                        config(host, TransportChoice::Shm),
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
            "{e}"
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

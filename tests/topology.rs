//! Topologies end to end: files loaded through `FERROCOLL_TOPO_FILE` and dumped through
//! `FERROCOLL_TOPO_DUMP_FILE`, bad files and files of another job refused with the problem
//! named, host identities discovered at rendezvous shaping the ring, and hierarchical and
//! topology-ordered collectives over real shared memory + TCP between fake hosts.

use std::path::PathBuf;
use std::time::Duration;

use ferrocoll::launch::LaunchEnv;
use ferrocoll::topology::json;
use ferrocoll::CollSpec;
use ferrocoll::{Collective, Communicator, Config, ErrorKind, ReduceOp, World};

const TWO_BY_TWO: &str = r#"{
  "format": "ferrocoll-topology", "version": 1,
  "source": "test: 2 hosts x 2 ranks placed cyclically, 1 Gbit between hosts",
  "world_size": 4,
  "intra_host": { "latency_us": 2, "bandwidth_gbit_s": 40 },
  "inter_host": { "latency_us": 50, "bandwidth_gbit_s": 1 },
  "hosts": [ { "name": "a", "ranks": [0, 2] }, { "name": "b", "ranks": [1, 3] } ]
}"#;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ferrocoll-topo-{}-{name}", std::process::id()))
}

fn with_file(name: &str, text: &str) -> (Config, PathBuf) {
    let path = temp(name);
    std::fs::write(&path, text).unwrap();
    let mut cfg = Config::default().with_timeout(Duration::from_secs(30));
    cfg.topo_file = Some(path.clone());
    (cfg, path)
}

#[test]
fn file_is_loaded_used_and_dumped() {
    let (mut cfg, path) = with_file("good.json", TWO_BY_TWO);
    let dump = temp("dump.json");
    cfg.topo_dump_file = Some(dump.clone());
    let out = World::new(4)
        .config(cfg)
        .run(|c| {
            let t = c.topology();
            let big = CollSpec {
                kind: Collective::AllReduce,
                world: 4,
                count: 4 << 20,
                root: 0,
            };
            let choice = c.algorithm_for(&big, 4).unwrap();
            let mut v: Vec<f32> = (0..100_003).map(|i| (i % 7 + c.rank()) as f32).collect();
            c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
            (t.hosts()[0].ranks.clone(), choice.algo.name(), v)
        })
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let want: Vec<f32> = (0..100_003).map(|i| (4 * (i % 7) + 6) as f32).collect();
    for (hosts0, algo, v) in out {
        assert_eq!(hosts0, vec![0, 2]);
        assert!(
            matches!(algo, "hierarchical" | "halving_doubling"),
            "{algo}"
        );
        assert_eq!(v, want);
    }
    let back = json::load(&dump).unwrap();
    let _ = std::fs::remove_file(&dump);
    assert_eq!(back.hosts()[1].ranks, vec![1, 3]);
    assert!((back.inter.gbit_s() - 1.0).abs() < 1e-9);
    assert!(back.source.unwrap().contains("cyclically"));
}

#[test]
fn bad_files_are_refused_naming_the_problem() {
    let cases = [
        (
            "missing.json",
            TWO_BY_TWO.replace("[1, 3]", "[1]"),
            "rank 3 is missing",
        ),
        (
            "negative.json",
            TWO_BY_TWO.replace("\"bandwidth_gbit_s\": 1 }", "\"bandwidth_gbit_s\": -1 }"),
            "bad inter_host.bandwidth_gbit_s = -1",
        ),
        (
            "malformed.json",
            TWO_BY_TWO.replace("\"world_size\": 4,", "\"world_size\": 4"),
            "malformed topology JSON at line",
        ),
        ("absent.json", String::new(), "cannot read topology file"),
    ];
    for (name, text, says) in cases {
        let (cfg, path) = with_file(name, &text);
        if text.is_empty() {
            let _ = std::fs::remove_file(&path);
        }
        let e = World::new(4).config(cfg).communicators().err().unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(e.to_string().contains(says), "{name}: {e}");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{name}");
    }
}

#[test]
fn topology_of_another_job_is_refused() {
    let (cfg, path) = with_file("other.json", TWO_BY_TWO);
    let e = World::new(3).config(cfg).communicators().err().unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        e.to_string(),
        "topology does not match the job: the topology has 4 ranks but the job has 3"
    );
}

fn free_store() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// Runs `f` on 4 ranks launched through the store on the fake hosts `hosts`.
fn launched<R: Send>(
    hosts: [&str; 4],
    cfg: &Config,
    f: impl Fn(&Communicator) -> R + Sync,
) -> Vec<ferrocoll::Result<R>> {
    let store = free_store();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|rank| {
                let (store, f) = (&store, &f);
                let mut cfg = cfg.clone();
                cfg.hostname = Some(hosts[rank].into());
                s.spawn(move || {
                    let env = LaunchEnv {
                        rank,
                        world: 4,
                        local_rank: None,
                        local_world: None,
                        store: store.clone(),
                        source: "test",
                    };
                    Communicator::from_launch(&env, cfg).map(|c| f(&c))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn ferrocoll_cores() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

#[test]
fn discovered_hosts_shape_ring_and_hierarchy_over_shm_and_tcp() {
    let cfg = Config::default().with_timeout(Duration::from_secs(30));
    for algo in ["ring", "hierarchical"] {
        let cfg = cfg.clone().with_algo(algo).unwrap();
        let out = launched(["x", "y", "x", "y"], &cfg, |c| {
            let mut v: Vec<f64> = (0..50_001).map(|i| (i * (c.rank() + 1)) as f64).collect();
            c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
            let mut g = vec![0u32; 4 * 1001];
            let mine: Vec<u32> = (0..1001).map(|i| (i + 10_000 * c.rank()) as u32).collect();
            c.all_gather(&mine, &mut g).unwrap();
            let t = c.topology();
            // Every rank reported its cores at rendezvous: the discovered hosts carry them.
            let cores: Vec<Option<usize>> = t.hosts().iter().map(|h| h.cores).collect();
            assert_eq!(cores, vec![Some(ferrocoll_cores()); 2]);
            (t.hosts()[0].ranks.clone(), c.transports(), v, g)
        });
        let want: Vec<f64> = (0..50_001).map(|i| (i * 10) as f64).collect();
        let want_g: Vec<u32> = (0..4)
            .flat_map(|r| (0..1001).map(move |i| (i + 10_000 * r) as u32))
            .collect();
        for r in out {
            let (hosts0, transports, v, g) = r.unwrap();
            assert_eq!(hosts0, vec![0, 2], "{algo}");
            assert_eq!(transports.iter().filter(|t| **t == "shm").count(), 1);
            assert!(v == want, "{algo}: all-reduce wrong");
            assert!(g == want_g, "{algo}: all-gather wrong");
        }
    }
}

#[test]
fn file_grouping_other_than_the_jobs_hosts_is_refused() {
    // The job has hosts {0, 1} and {2, 3}; the file says {0, 2} and {1, 3}.
    let (cfg, path) = with_file("grouping.json", TWO_BY_TWO);
    let out = launched(["x", "x", "y", "y"], &cfg, |_| ());
    let _ = std::fs::remove_file(&path);
    for r in out {
        let e = r.err().unwrap();
        assert_eq!(
            e.to_string(),
            "topology does not match the job: ranks 0 and 1 are on different hosts in the \
             topology but on one host in the job"
        );
    }
}

#[test]
fn split_children_plan_on_their_part_of_the_parents_topology() {
    // Parent: 4 ranks on hosts x, y, x, y, with a topology file (which describes the
    // parent, so the children must not be checked against it). Children: even and odd ranks.
    let (cfg, path) = with_file("split.json", TWO_BY_TWO);
    let id = ferrocoll::UniqueId::new(&cfg).unwrap();
    let out: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|rank| {
                let (id, mut cfg) = (&id, cfg.clone());
                cfg.hostname = Some(["x", "y"][rank % 2].into());
                s.spawn(move || -> ferrocoll::Result<(usize, usize, Vec<f32>)> {
                    let c = Communicator::from_unique_id(id, rank, 4, cfg)?;
                    let child = c.split_by(Some((rank % 2) as u32), 0)?.unwrap();
                    let mut v = vec![(rank + 1) as f32; 1000];
                    child.all_reduce(&mut v, ReduceOp::Sum)?;
                    let t = child.topology();
                    Ok((t.world(), t.hosts().len(), v))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let _ = std::fs::remove_file(&path);
    for (rank, r) in out.into_iter().enumerate() {
        let (world, hosts, v) = r.unwrap();
        assert_eq!(
            (world, hosts),
            (2, 1),
            "rank {rank}: both members on one host"
        );
        let want = if rank % 2 == 0 { 1.0 + 3.0 } else { 2.0 + 4.0 };
        assert!(v.iter().all(|x| *x == want), "rank {rank}");
    }
}

#[test]
fn split_with_gives_children_their_own_configuration() {
    // Three ranks, one parent (auto) and two children on the same ranks that force ring and
    // direct; calls alternate between the three and all stay right. A child forcing an
    // algorithm that does not apply to a collective refuses that collective.
    let id = ferrocoll::UniqueId::new(&Config::default()).unwrap();
    let spec = CollSpec {
        kind: Collective::AllReduce,
        world: 3,
        count: 1 << 16,
        root: 0,
    };
    let out: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|rank| {
                let id = &id;
                s.spawn(move || -> ferrocoll::Result<Vec<String>> {
                    let c = Communicator::from_unique_id(id, rank, 3, Config::default())?;
                    let mut names = vec![c.algorithm_for(&spec, 4)?.algo.name().to_string()];
                    let mut kids = Vec::new();
                    for algo in ["ring", "direct", "tree"] {
                        let cfg = c.config().clone().with_algo(algo)?;
                        let k = c.split_with(Some(0), rank as i32, cfg)?.unwrap();
                        names.push(k.algorithm_for(&spec, 4)?.algo.name().to_string());
                        kids.push(k);
                    }
                    for round in 0..3 {
                        for comm in [&c, &kids[0], &kids[1]] {
                            let mut v = vec![(rank + round) as f32; spec.count];
                            comm.all_reduce(&mut v, ReduceOp::Sum)?;
                            let want = (3 * round + 3) as f32;
                            if v.iter().any(|x| *x != want) {
                                return Err(ferrocoll::Error::Internal(format!(
                                    "round {round}: wrong sum"
                                )));
                            }
                        }
                    }
                    let (inp, mut outp) = (vec![1f32; 8], vec![0f32; 24]);
                    let e = kids[2].all_gather(&inp, &mut outp).unwrap_err();
                    names.push(e.to_string());
                    Ok(names)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, r) in out.into_iter().enumerate() {
        let names = r.unwrap();
        assert_eq!(&names[1..4], ["ring", "direct", "tree"], "rank {rank}");
        assert!(
            names[4].contains("not supported"),
            "rank {rank}: {}",
            names[4]
        );
    }
}

//! Tests of the topology model and its discovered defaults.

use super::*;

#[test]
fn discovered_cores_are_the_union_of_the_ranks_masks() {
    let names: Vec<String> = ["a", "a", "b", "b"].iter().map(|s| s.to_string()).collect();
    // Bound one per core: host a's ranks on cores 0 and 1, host b's both on core 3.
    let t = Topology::from_hosts(&names, &[1; 4], &[vec![0], vec![1], vec![3], vec![3]]);
    assert_eq!(t.hosts()[0].cores, Some(2));
    assert_eq!(t.hosts()[1].cores, Some(1));
    // A quota of 2 over a mask of 8 CPUs caps the union.
    let all: Vec<usize> = (0..8).collect();
    let t = Topology::from_hosts(&names, &[2, 2, 8, 8], &vec![all; 4]);
    assert_eq!(t.hosts()[0].cores, Some(2));
    assert_eq!(t.hosts()[1].cores, Some(8));
    // A rank without a mask: the smallest count, as before.
    let t = Topology::from_hosts(&names, &[1, 1, 4, 4], &[vec![0], vec![], vec![2], vec![3]]);
    assert_eq!(t.hosts()[0].cores, Some(1));
    assert_eq!(t.hosts()[1].cores, Some(2));
}

fn host(name: &str, ranks: &[usize]) -> Host {
    Host {
        name: name.into(),
        ranks: ranks.to_vec(),
        nic: None,
        cores: None,
        intra_total: None,
    }
}

fn links() -> (LinkSpec, LinkSpec) {
    (
        LinkSpec::from_us_gbit(1.0, 100.0),
        LinkSpec::from_us_gbit(20.0, 1.0),
    )
}

#[test]
fn topologies_without_figures_get_the_default_links() {
    let t = Topology::uniform(2, 1, false);
    assert_eq!(
        (t.intra, t.inter, t.nic),
        (DEFAULT_INTRA, DEFAULT_INTER, DEFAULT_INTER.bandwidth)
    );
}

#[test]
fn uniform_cyclic_places_rank_on_r_mod_h() {
    let t = Topology::uniform(2, 2, true);
    assert_eq!(t.hosts()[0].ranks, vec![0, 2]);
    assert_eq!(t.hosts()[1].ranks, vec![1, 3]);
    assert_eq!(t.host_of(3), 1);
    assert_eq!(t.local_of(3), 1);
    assert_eq!(t.link(0, 2), t.intra);
    assert_eq!(t.link(0, 1), t.inter);
}

#[test]
fn missing_duplicate_and_out_of_range_ranks_are_named() {
    let (i, o) = links();
    let e = Topology::new(
        vec![host("a", &[0, 1]), host("b", &[3])],
        i,
        o,
        None,
        vec![],
    )
    .unwrap_err();
    assert_eq!(e, TopologyError::RankOutOfRange { rank: 3, world: 3 });
    let e = Topology::new(
        vec![host("a", &[0, 2]), host("b", &[0])],
        i,
        o,
        None,
        vec![],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("rank 0 is on both host a and host b"),
        "{e}"
    );
    let e = Topology::new(vec![host("a", &[]), host("b", &[0])], i, o, None, vec![]).unwrap_err();
    assert_eq!(e, TopologyError::EmptyHost("a".into()));
    let e = Topology::new(vec![host("a", &[0]), host("a", &[1])], i, o, None, vec![]).unwrap_err();
    assert_eq!(e, TopologyError::DuplicateHost("a".into()));
    assert_eq!(
        Topology::new(vec![], i, o, None, vec![]).unwrap_err(),
        TopologyError::NoHosts
    );
}

#[test]
fn bad_figures_are_refused() {
    let (i, o) = links();
    let neg = LinkSpec {
        alpha: 0.0,
        bandwidth: -1.0,
    };
    let e = Topology::new(vec![host("a", &[0])], neg, o, None, vec![]).unwrap_err();
    assert!(e.to_string().contains("intra_host.bandwidth_gbit_s"), "{e}");
    let e = Topology::new(vec![host("a", &[0])], i, o, Some(f64::NAN), vec![]).unwrap_err();
    assert!(e.to_string().contains("nic_gbit_s"), "{e}");
    let slow = LinkSpec {
        alpha: -1.0,
        bandwidth: 1.0,
    };
    let e = Topology::new(vec![host("a", &[0])], i, slow, None, vec![]).unwrap_err();
    assert!(e.to_string().contains("inter_host.latency_us"), "{e}");
    let t = Topology::uniform(2, 1, false);
    assert!(matches!(
        t.clone().with_host_link(0, 0, o).unwrap_err(),
        TopologyError::BadHostLink { .. }
    ));
    assert!(matches!(
        t.with_host_link(0, 1, neg).unwrap_err(),
        TopologyError::BadValue { .. }
    ));
}

#[test]
fn subset_keeps_hosts_and_links_of_the_members() {
    let slow = LinkSpec::from_us_gbit(9.0, 0.5);
    let t = Topology::uniform(3, 2, true) // hosts {0,3} {1,4} {2,5}
        .with_host_link(1, 2, slow)
        .unwrap();
    let s = t.subset(&[4, 2, 1, 5]).unwrap();
    assert_eq!(s.world(), 4);
    assert_eq!(s.hosts().len(), 2);
    assert_eq!(s.hosts()[0].ranks, vec![0, 2]); // old 4 and 1 on old host 1
    assert_eq!(s.hosts()[1].ranks, vec![1, 3]); // old 2 and 5 on old host 2
    assert_eq!(s.link(0, 1), slow);
    let e = t.subset(&[0, 0]).unwrap_err();
    assert!(
        matches!(e, TopologyError::DuplicateRank { rank: 0, .. }),
        "{e}"
    );
    let e = t.subset(&[7]).unwrap_err();
    assert_eq!(e, TopologyError::RankOutOfRange { rank: 7, world: 6 });
}

#[test]
fn a_topology_that_does_not_fit_the_job_is_refused() {
    let t = Topology::uniform(2, 2, true);
    let e = t.check_matches(5, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "topology does not match the job: the topology has 4 ranks but the job has 5"
    );
    let job = Topology::uniform(2, 2, false);
    let e = t.check_matches(4, Some(&job)).unwrap_err();
    assert!(e.to_string().contains("ranks 0 and 1"), "{e}");
    // Same grouping under other names is accepted.
    let names: Vec<String> = ["x", "y", "x", "y"].iter().map(|s| s.to_string()).collect();
    t.check_matches(4, Some(&Topology::from_host_names(&names)))
        .unwrap();
}

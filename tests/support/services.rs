//! Real Redis and etcd servers for the cluster tests: each on free loopback ports with a
//! temporary data directory, stopped when dropped. They are the Debian packages
//! `redis-server` and `etcd-server` (`make test` installs them).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn(program: &str, args: &[String], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program} ({e}); install it with `make test-deps` or apt-get")
        })
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A `redis-server` on 127.0.0.1, no persistence.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let mut r = RedisServer {
            port: super::free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (after [`RedisServer::kill`]); the data is gone.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    fn restart_with(&mut self, extra: &[&str]) {
        kill(&mut self.child);
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            &self.dir.path().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        self.child = Some(spawn(
            "redis-server",
            &args,
            &self.dir.path().join("redis.log"),
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.try_cmd(&["PING"]).is_some_and(|r| r == "PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    /// Kills the server (SIGKILL): connections drop at once.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Runs a command and returns its reply as text (arrays one element a line; nil empty).
    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args)
            .unwrap_or_else(|| panic!("redis {args:?} failed"))
    }

    fn try_cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut r = BufReader::new(s);
        read_reply(&mut r)
    }
}

/// Reads one RESP reply.
fn read_reply(r: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" | ":" => Some(rest.to_string()),
        "-" => Some(format!("ERR {rest}")),
        "$" => {
            let n: i64 = rest.parse().ok()?;
            if n < 0 {
                return Some(String::new());
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf).ok()?;
            buf.truncate(n as usize);
            Some(String::from_utf8_lossy(&buf).into_owned())
        }
        "*" => {
            let n: i64 = rest.parse().ok()?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Some(items.join("\n"))
        }
        _ => None,
    }
}

/// A Redis Cluster of `n` primaries (no replicas) on 127.0.0.1.
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` (at least 3) cluster-enabled servers, assigns the slots
    /// (`redis-cli --cluster create`) and waits until the cluster is up.
    pub fn start(n: usize) -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..n {
            let mut r = RedisServer {
                port: super::free_port(),
                dir: tempfile::tempdir().expect("tempdir"),
                child: None,
            };
            let conf = r.dir.path().join("nodes.conf").display().to_string();
            r.restart_with(&["--cluster-enabled", "yes", "--cluster-config-file", &conf]);
            nodes.push(r);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (package redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !nodes
            .iter()
            .all(|r| r.cmd(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "the cluster did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }

    /// The nodes' URLs, as `cluster` seeds.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A single-member `etcd` on 127.0.0.1 with a temporary data directory.
pub struct EtcdServer {
    /// The client port.
    pub port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts one on free ports and waits until it is healthy.
    pub fn start() -> EtcdServer {
        let mut e = EtcdServer {
            port: super::free_port(),
            peer_port: super::free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        e.restart();
        e
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts it (again, on the same ports and data: the revision history is kept).
    pub fn restart(&mut self) {
        kill(&mut self.child);
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let args: Vec<String> = [
            "--name",
            "gh",
            "--data-dir",
            &self.data_dir().display().to_string(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("gh={peer}"),
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "300",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self.dir.path().join("etcd.log");
        self.child = Some(spawn("etcd", &args, &log));
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.healthy() {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "etcd exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        panic!("etcd did not become healthy on port {}", self.port);
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let req = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// Kills it (SIGKILL).
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again with no data (a restore from scratch: revisions start over).
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.data_dir());
        self.restart();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

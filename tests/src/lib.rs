//! Test harness: start real `meridian` processes on loopback and talk to them over real sockets.
//!
//! Every process binds port 0 and reports its addresses on stdout; the harness reads them back,
//! so no test hard-codes a port. Processes are killed when their handle drops. The HTTP client is
//! deliberately minimal and blocking: tests need to send exact bytes (malformed requests, huge
//! bodies, slow clients) that a full client library would refuse to produce.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

/// The `meridian` binary, built once per test run if it is not there yet.
pub fn meridian_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/meridian
        let profile_dir = exe.parent().and_then(Path::parent).expect("target profile dir");
        let bin = profile_dir.join("meridian");
        if std::env::var_os("MERIDIAN_SKIP_BUILD").is_none() {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "meridian", "--bin", "meridian"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("running cargo build");
            assert!(status.success(), "building the meridian binary failed");
        }
        assert!(bin.exists(), "meridian binary not found at {}", bin.display());
        bin
    })
    .clone()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("meridian-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed on drop, whose stdout lines are collected and stderr kept in a file.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    pub stderr_path: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, args: &[String], env: &[(&str, &str)], log_dir: &Path) -> Proc {
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(meridian_bin());
        cmd.args(args).stdout(Stdio::piped()).stderr(stderr).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn meridian");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { name: name.to_string(), child, lines: rx, stderr_path }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for a stdout line containing `needle`.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no line with {needle:?} within {timeout:?}; exit: {:?}; stderr:\n{}",
                    self.name,
                    self.child.try_wait(),
                    self.stderr()
                ),
            }
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        send_signal(self.child.id(), sig);
    }

    /// Wait for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident memory of the process in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// Signals go through kill(1): the workspace forbids unsafe code, libc::kill included.
fn send_signal(pid: u32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parse `key=ADDR` out of a "listening" line.
fn addr_in(line: &str, key: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= address in {line:?}"))
}

pub struct Upstream {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Upstream {
    pub fn start(name: &str, dir: &Path) -> Upstream {
        let args = ["upstream", "--listen", "127.0.0.1:0", "--name", name].map(String::from).to_vec();
        let mut proc = Proc::spawn(name, &args, &[], dir);
        let line = proc.wait_line("listening", Duration::from_secs(20));
        Upstream { addr: addr_in(&line, "http"), proc }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Call a `/_control/CMD?query` knob and return its JSON answer.
    pub fn control(&self, cmd_and_query: &str) -> Value {
        let r = request(self.addr, "POST", &format!("/_control/{cmd_and_query}"), &[], b"");
        assert_eq!(r.status, 200, "control {cmd_and_query}: {}", r.text());
        r.json()
    }

    pub fn stats(&self) -> Value {
        self.control("stats")
    }
}

pub struct Node {
    pub proc: Proc,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// `Bearer <token>` for `admin_get`: the first admin token of the node's
    /// `--admin-token-file`, when it has one.
    pub admin_bearer: Option<String>,
}

/// The first admin token of the `--admin-token-file` in `args` (a lone token, or the first
/// `NAME admin TOKEN` line), as an `Authorization` value.
fn admin_bearer_of(args: &[String]) -> Option<String> {
    let at = args.iter().position(|a| a == "--admin-token-file")?;
    let text = std::fs::read_to_string(args.get(at + 1)?).ok()?;
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| !f.is_empty() && !f[0].starts_with('#'))
        .collect();
    let token = match lines.as_slice() {
        [one] if one.len() == 1 => one[0],
        _ => lines.iter().find(|f| f.len() == 3 && f[1] == "admin").map(|f| f[2])?,
    };
    Some(format!("Bearer {token}"))
}

impl Node {
    /// Start a node with `--http`/`--admin` on port 0 plus `extra` arguments, and wait until it
    /// reports its addresses.
    pub fn start(id: &str, region: &str, extra: &[&str], dir: &Path) -> Node {
        let mut args: Vec<String> =
            ["node", "--id", id, "--region", region, "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
                .map(String::from)
                .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut proc = Proc::spawn(id, &args, &[("MERIDIAN_LOG_LEVEL", "info,meridian=debug")], dir);
        let line = proc.wait_line("listening", Duration::from_secs(20));
        let admin_bearer = admin_bearer_of(&args);
        Node { http: addr_in(&line, "http"), admin: addr_in(&line, "admin"), proc, admin_bearer }
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.http, "GET", path, &[], b"")
    }

    /// Like `admin_get`, but `None` when the node does not answer (stopped, starting).
    pub fn try_admin_get(&self, path: &str) -> Option<Response> {
        let auth = self.admin_bearer.as_ref().map(|b| format!("authorization: {b}\r\n")).unwrap_or_default();
        let head = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n{auth}connection: close\r\n\r\n", self.admin);
        raw(self.admin, head.as_bytes(), Duration::from_secs(5)).ok()
    }

    /// `GET path` on the admin API, with the node's admin token when it has one.
    pub fn admin_get(&self, path: &str) -> Response {
        match &self.admin_bearer {
            Some(b) => request(self.admin, "GET", path, &[("authorization", b)], b""),
            None => request(self.admin, "GET", path, &[], b""),
        }
    }

    /// Poll `GET /readyz` until 200.
    pub fn wait_ready(&self, timeout: Duration) {
        eventually(timeout, || self.admin_get("/readyz").status == 200, "node ready");
    }

    /// Read one metric value (first line starting with `series`).
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.admin_get("/metrics").text();
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// A routing table with one service `echo` whose `region` endpoints are `urls`, and one route `/`.
pub fn simple_table(region: &str, urls: &[String], service_extra: Value) -> Value {
    let mut svc = json!({ "endpoints": { region: urls }, "timeout_ms": 3000, "retries": 2 });
    if let (Some(s), Some(extra)) = (svc.as_object_mut(), service_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "services": { "echo": svc },
        "routes": [ { "name": "all", "path_prefix": "/", "service": "echo" } ]
    })
}

/// Open a test phase with a line saying what it checks (shows in the output of a failed test).
pub fn phase(what: &str) {
    eprintln!("--- {what}");
}

/// Retry `check` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// One HTTP/1.1 request on a fresh connection (`connection: close`), with a content-length body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

/// Send exact bytes, read the whole answer until the server closes, parse it.
pub fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(bytes)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no response head"))?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    Ok(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2.min(b.len() - eol - 2 - size)..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Helpers for the resilience, timeout, bad-input, streaming and shutdown suites (t20–t60).
// ---------------------------------------------------------------------------------------------

/// A loopback port that nothing listens on: bound once to get a free number, then released.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// An endpoint URL that refuses connections.
pub fn closed_url() -> String {
    format!("http://127.0.0.1:{}", closed_port())
}

/// Whether something accepts TCP connections at `addr` right now.
pub fn accepts_connections(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The `meridian_endpoint_up` series of one endpoint, for `Node::metric`.
pub fn endpoint_up_series(service: &str, url: &str) -> String {
    format!("meridian_endpoint_up{{service=\"{service}\",endpoint=\"{url}\"}}")
}

/// Run `f` and return its result with how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t0 = Instant::now();
    let out = f();
    (out, t0.elapsed())
}

/// Read from `s` until the peer closes the connection (EOF or reset) or `limit` passes; returns
/// what was read and when the connection ended, `None` if it was still open at `limit`.
pub fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = limit.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return (got, None);
        }
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match s.read(&mut buf) {
            Ok(0) => return (got, Some(t0.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return (got, None)
            }
            Err(_) => return (got, Some(t0.elapsed())),
        }
    }
}

impl Proc {
    /// Stdout lines received so far, without waiting.
    pub fn stdout_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

/// Run `meridian ARGS` that is expected to refuse to start; returns its exit code (None if it
/// was still running after `timeout`, then it is killed), its stderr and its stdout lines.
pub fn run_expecting_exit(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    dir: &Path,
    timeout: Duration,
) -> (Option<i32>, String, Vec<String>) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut p = Proc::spawn(name, &args, env, dir);
    let code = p.wait_exit(timeout).map(|s| s.code().unwrap_or(-1));
    // Give the stdout reader a moment to forward what the process printed before it exited.
    std::thread::sleep(Duration::from_millis(50));
    let out = p.stdout_lines();
    (code, p.stderr(), out)
}

impl Node {
    /// Start `meridian` with exactly `args` (the caller chooses every flag, addresses included) and
    /// wait for its "listening" line. Unspecified bind addresses (0.0.0.0) are reached at 127.0.0.1.
    pub fn start_args(name: &str, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Node {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "MERIDIAN_LOG_LEVEL") {
            env.push(("MERIDIAN_LOG_LEVEL", "info,meridian=debug"));
        }
        let mut proc = Proc::spawn(name, &args, &env, dir);
        let line = proc.wait_line("listening", Duration::from_secs(20));
        let loopback = |mut a: SocketAddr| {
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            a
        };
        let admin_bearer = admin_bearer_of(&args);
        Node {
            http: loopback(addr_in(&line, "http")),
            admin: loopback(addr_in(&line, "admin")),
            proc,
            admin_bearer,
        }
    }

    /// Start a node in region `region` serving `table`, written to `routes.json` in `dir`.
    pub fn with_table(id: &str, region: &str, table: &Value, extra: &[&str], dir: &TempDir) -> Node {
        let routes = dir.write(&format!("{id}-routes.json"), &table.to_string());
        let mut args = vec!["--routes", routes.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        let node = Node::start(id, region, &args, dir.path());
        node.wait_ready(Duration::from_secs(10));
        node
    }

    /// `PUT /routes` with an optional `If-Match` version.
    pub fn put_routes(&self, table: &str, if_match: Option<u64>) -> Response {
        let v = if_match.map(|v| v.to_string());
        let mut headers = vec![("content-type", "application/json")];
        if let Some(v) = &v {
            headers.push(("if-match", v.as_str()));
        }
        request(self.admin, "PUT", "/routes", &headers, table.as_bytes())
    }

    /// The applied routing-table version, from `GET /routes`.
    pub fn routes_version(&self) -> u64 {
        self.admin_get("/routes").json()["version"].as_u64().expect("routes version")
    }

    /// `(healthy, total)` local endpoints of `service` as `GET /cluster` reports them.
    pub fn service_health(&self, service: &str) -> (u64, u64) {
        let c = self.admin_get("/cluster").json();
        let s = &c["members"][0]["services"][service];
        (s["healthy"].as_u64().unwrap_or(u64::MAX), s["total"].as_u64().unwrap_or(u64::MAX))
    }

    /// Whether the node's log contains a panic.
    pub fn panicked(&self) -> bool {
        self.proc.stderr().contains("panicked")
    }
}

impl Upstream {
    /// Requests this upstream has served since its last reset (health checks excluded).
    pub fn requests(&self) -> u64 {
        self.stats()["requests"].as_u64().expect("requests count")
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for the cluster suites (t70–t72): certificates, cluster nodes, /cluster views, noise.
// ---------------------------------------------------------------------------------------------

/// `meridian certs --out DIR/OUT --nodes IDS`: a cluster CA (reused if the directory has one) and
/// a certificate per node. Another `out` directory gives another CA.
pub fn make_certs(dir: &Path, out: &str, nodes: &[&str]) -> PathBuf {
    let out_dir = dir.join(out);
    let output = Command::new(meridian_bin())
        .arg("certs")
        .arg("--out")
        .arg(&out_dir)
        .args(["--nodes", &nodes.join(",")])
        .stdin(Stdio::null())
        .output()
        .expect("running meridian certs");
    assert!(
        output.status.success(),
        "meridian certs failed: {:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    out_dir
}

/// What every node of one test cluster shares: its root directory (data dirs and logs go there),
/// the TLS directory, the `--routes` seed file and `--expect`.
pub struct ClusterSpec {
    pub root: PathBuf,
    pub tls_dir: PathBuf,
    pub routes: PathBuf,
    pub expect: usize,
    /// Extra flags every node gets (e.g. `--gossip-interval-ms`).
    pub extra: Vec<String>,
}

/// A running cluster node: the `Node` handle plus the addresses from its `cluster` line.
pub struct ClusterNode {
    pub node: Node,
    pub id: String,
    pub region: String,
    pub gossip: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
}

impl std::ops::Deref for ClusterNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

/// Where one incarnation of a node should bind its gossip and peer sockets.
#[derive(Clone, Copy, Debug)]
pub struct ClusterPorts {
    pub gossip: SocketAddr,
    pub peer: SocketAddr,
}

impl ClusterPorts {
    /// Fresh ports chosen by the kernel.
    pub fn any() -> ClusterPorts {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        ClusterPorts { gossip: any, peer: any }
    }
}

impl ClusterSpec {
    /// A spec under `dir` whose nodes seed the routing table from `table`.
    pub fn new(dir: &TempDir, tls_dir: &Path, table: &Value, expect: usize) -> ClusterSpec {
        let routes = dir.write("cluster-routes.json", &table.to_string());
        ClusterSpec {
            root: dir.path().to_path_buf(),
            tls_dir: tls_dir.to_path_buf(),
            routes,
            expect,
            extra: Vec::new(),
        }
    }

    /// The data dir node `id` uses for every incarnation.
    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.root.join(format!("data-{id}"))
    }

    /// The full argument list (after `node --id .. --region .. --http .. --admin ..`) of a node.
    pub fn args(&self, id: &str, seeds: &[SocketAddr], ports: ClusterPorts, tls_dir: &Path) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--tls-dir".into(),
            tls_dir.display().to_string(),
            "--gossip".into(),
            ports.gossip.to_string(),
            "--peer".into(),
            ports.peer.to_string(),
            "--expect".into(),
            self.expect.to_string(),
            "--data-dir".into(),
            self.data_dir(id).display().to_string(),
            "--routes".into(),
            self.routes.display().to_string(),
        ];
        if !seeds.is_empty() {
            let seeds: Vec<String> = seeds.iter().map(SocketAddr::to_string).collect();
            args.push("--seeds".into());
            args.push(seeds.join(","));
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Start node `id` in `region` with `--seeds seeds` (none for the first node) on fresh ports
    /// and wait for its `cluster` line. Does not wait for readiness.
    pub fn start(&self, id: &str, region: &str, seeds: &[SocketAddr]) -> ClusterNode {
        self.start_on(id, region, seeds, ClusterPorts::any(), &self.tls_dir)
    }

    /// Start node `id` binding `ports`, with the certificates in `tls_dir`.
    pub fn start_on(
        &self,
        id: &str,
        region: &str,
        seeds: &[SocketAddr],
        ports: ClusterPorts,
        tls_dir: &Path,
    ) -> ClusterNode {
        let args = self.args(id, seeds, ports, tls_dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Each incarnation logs to its own directory so a restart keeps the earlier stderr.
        let log_dir = (1..)
            .map(|n| self.root.join(format!("log-{id}-{n}")))
            .find(|p| !p.exists())
            .expect("a free log dir name");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let mut node = Node::start(id, region, &args, &log_dir);
        let line = node.proc.wait_line(" cluster gossip=", Duration::from_secs(20));
        ClusterNode {
            gossip: addr_in(&line, "gossip"),
            peer: addr_in(&line, "peer"),
            node,
            id: id.to_string(),
            region: region.to_string(),
            data_dir: self.data_dir(id),
        }
    }
}

impl ClusterNode {
    /// `GET /cluster` as JSON.
    pub fn cluster(&self) -> Value {
        let r = self.admin_get("/cluster");
        assert_eq!(r.status, 200, "{}: GET /cluster: {}", self.id, r.text());
        r.json()
    }

    /// `GET /cluster`, or `None` if the node does not answer (stopped, starting).
    pub fn try_cluster(&self) -> Option<Value> {
        let r = self.try_admin_get("/cluster")?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).ok()).flatten()
    }

    /// The leader this node knows, if any.
    pub fn leader(&self) -> Option<String> {
        self.try_cluster().and_then(|c| c["raft"]["leader"].as_str().map(String::from))
    }

    /// `(voters, learners)` ids as this node's `/cluster` reports them, sorted.
    pub fn raft_members(&self) -> (Vec<String>, Vec<String>) {
        let c = self.cluster();
        (ids(&c["raft"]["voters"]), ids(&c["raft"]["learners"]))
    }

    /// This node's view of member `id` in `/cluster` `members`.
    pub fn member(&self, id: &str) -> Option<Value> {
        self.try_cluster()?["members"].as_array()?.iter().find(|m| m["id"] == id).cloned()
    }

    /// Whether `GET /readyz` answers 200 right now.
    pub fn is_ready(&self) -> bool {
        try_get(self.admin, "/readyz").is_some_and(|r| r.status == 200)
    }

    /// The applied routing version from `GET /routes`, `None` if the node does not answer.
    pub fn try_routes_version(&self) -> Option<u64> {
        let r = self.try_admin_get("/routes")?;
        serde_json::from_slice::<Value>(&r.body).ok()?["version"].as_u64()
    }

    /// Last `n` lines of this incarnation's stderr (for assertion messages).
    pub fn stderr_tail(&self, n: usize) -> String {
        let s = self.proc.stderr();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// `GET path` that gives `None` instead of panicking when the server does not answer within 5 s.
pub fn try_get(addr: SocketAddr, path: &str) -> Option<Response> {
    let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    raw(addr, head.as_bytes(), Duration::from_secs(5)).ok()
}

/// A sorted list of the strings in a JSON array.
pub fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Wait until every node is ready and all of them report the same leader, one of `nodes`;
/// returns that leader's id.
pub fn wait_cluster_ready(nodes: &[&ClusterNode], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let leaders: Vec<Option<String>> = nodes.iter().map(|n| n.leader()).collect();
        let ready = nodes.iter().all(|n| n.is_ready());
        if ready {
            if let Some(Some(l)) = leaders.first() {
                if leaders.iter().all(|x| x.as_deref() == Some(l)) && nodes.iter().any(|n| &n.id == l) {
                    return l.clone();
                }
            }
        }
        if Instant::now() >= deadline {
            let views: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}: ready={} cluster={:?}", n.id, n.is_ready(), n.try_cluster()))
                .collect();
            panic!("cluster not ready with one leader within {timeout:?}:\n{}", views.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Poll every node's `GET /routes` until all report `version` (or later); returns the time taken.
pub fn wait_all_at_version(nodes: &[&ClusterNode], version: u64, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let seen: Vec<(String, Option<u64>)> =
            nodes.iter().map(|n| (n.id.clone(), n.try_routes_version())).collect();
        if seen.iter().all(|(_, v)| v.is_some_and(|v| v >= version)) {
            return t0.elapsed();
        }
        if t0.elapsed() >= timeout {
            panic!("not every node applied routing version {version} within {timeout:?}: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `count` datagrams of pseudo-random bytes (sizes 1..=60000) to `addr`, deterministic in
/// `seed`. Send errors (e.g. ICMP unreachable from an earlier datagram) are ignored.
pub fn send_garbage_datagrams(addr: SocketAddr, count: usize, seed: u64) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let mut x = seed | 1;
    let mut next = move || {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for i in 0..count {
        let size = match i % 4 {
            0 => 1 + (next() % 64) as usize,
            1 => 1 + (next() % 1500) as usize,
            2 => 1200 + (next() % 200) as usize,
            _ => 1 + (next() % 60_000) as usize,
        };
        let mut buf = vec![0u8; size];
        for chunk in buf.chunks_mut(8) {
            let r = next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        // Some datagrams start like a QUIC long-header Initial so they reach the handshake code.
        if i % 5 == 0 && size > 6 {
            buf[0] = 0xc0 | (buf[0] & 0x0f);
            buf[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        let _ = sock.send_to(&buf, addr);
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl ClusterNode {
    /// The gossip and peer addresses this incarnation bound, to restart it on the same ports.
    pub fn ports(&self) -> ClusterPorts {
        ClusterPorts { gossip: self.gossip, peer: self.peer }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for the cross-region failover suite (t80).
// ---------------------------------------------------------------------------------------------

/// Like `request`, but an IO failure (refused, reset, read timeout) comes back as an error
/// instead of a panic, and the read is bounded by `timeout`.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes, timeout)
}

impl Upstream {
    /// Start a demo upstream on exactly `addr` (say the port of one that was killed), retrying
    /// for up to `within` while the port is still taken.
    pub fn start_on(name: &str, addr: SocketAddr, dir: &Path, within: Duration) -> Upstream {
        let deadline = Instant::now() + within;
        let args = ["upstream", "--listen", &addr.to_string(), "--name", name].map(String::from).to_vec();
        loop {
            let mut proc = Proc::spawn(name, &args, &[], dir);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                match proc.lines.recv_timeout(Duration::from_millis(50)) {
                    Ok(line) if line.contains("listening") => {
                        return Upstream { addr: addr_in(&line, "http"), proc }
                    }
                    Ok(_) => {}
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Ok(Some(_)) = proc.child.try_wait() {
                            break;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            let why = proc.stderr();
            drop(proc);
            assert!(
                Instant::now() < deadline,
                "{name}: could not listen on {addr} within {within:?}:\n{why}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Every `/metrics` series whose line starts with `prefix`, as (series with labels, value).
pub fn metric_series(text: &str, prefix: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every `/metrics` series whose line starts with `prefix`.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    metric_series(text, prefix).iter().map(|(_, v)| v).sum()
}

impl ClusterNode {
    /// `(live, healthy, total)` of `service` for member `id`, as this node's `/cluster` shows it.
    pub fn member_service(&self, id: &str, service: &str) -> Option<(bool, u64, u64)> {
        let m = self.member(id)?;
        let s = &m["services"][service];
        Some((m["live"].as_bool()?, s["healthy"].as_u64()?, s["total"].as_u64()?))
    }

    /// `GET /metrics` as text.
    pub fn metrics_text(&self) -> String {
        self.admin_get("/metrics").text()
    }
}

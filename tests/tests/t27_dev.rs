//! `meridian dev`: the README's main job. One command starts a three-region cluster (nodes,
//! demo upstreams, certificates, a table with a quota), says when it is ready, serves, fails over,
//! rate-limits, and on Ctrl-C stops everything it started.

use std::net::SocketAddr;
use std::time::Duration;

use meridian_tests::*;

const SIGINT: i32 = 2;

#[test]
fn dev_starts_a_ready_cluster_and_ctrl_c_leaves_nothing_listening() {
    let dir = TempDir::new("t27-dev");
    // Fixed ports (dev needs contiguous ones), below Linux's ephemeral range (32768 and up) where
    // the other tests' port-0 sockets land: 20000-23999 data, 24000-27999 admin, 28000-32061
    // internal.
    let base = 20_000 + (std::process::id() % 200) as u16 * 20;
    let (http, admin, internal) = (base, base + 4_000, base + 8_000);
    let args: Vec<String> = [
        "dev",
        "--base-port",
        &http.to_string(),
        "--admin-base-port",
        &admin.to_string(),
        "--internal-base-port",
        &internal.to_string(),
        "--dir",
        dir.path().join("dev").to_str().expect("path"),
    ]
    .map(String::from)
    .to_vec();
    let mut dev = Proc::spawn("dev", &args, &[], dir.path());

    phase("ready: the table of nodes with their URLs and the lines to try");
    dev.wait_line("ready in", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let out = dev.stdout_lines().join("\n");
    for id in ["us-1", "eu-1", "ap-1"] {
        assert!(out.contains(id), "{id} listed:\n{out}");
    }
    assert!(
        out.contains(&format!("http://127.0.0.1:{http}"))
            && out.contains(&format!("http://127.0.0.1:{admin}")),
        "{out}"
    );
    assert!(out.contains("leader") && out.contains("_control/fail") && out.contains("x-tenant"), "{out}");

    phase("a request is served in its region; with the us upstream failing it is served elsewhere");
    let data: SocketAddr = format!("127.0.0.1:{http}").parse().expect("addr");
    let up: SocketAddr = format!("127.0.0.1:{}", internal + 60).parse().expect("addr");
    let r = request(data, "GET", "/hello", &[], b"");
    assert_eq!((r.status, r.header("x-meridian-region")), (200, Some("us")));
    assert_eq!(request(up, "GET", "/_control/fail?status=503", &[], b"").status, 200);
    let r = request(data, "GET", "/hello", &[], b"");
    assert_eq!(r.status, 200);
    assert!(matches!(r.header("x-meridian-region"), Some("eu" | "ap")), "{:?}", r.headers);
    request(up, "GET", "/_control/reset", &[], b"");

    phase("the quota limits /limited");
    let statuses: Vec<u16> =
        (0..15).map(|_| request(data, "GET", "/limited", &[("x-tenant", "acme")], b"").status).collect();
    assert!(statuses.contains(&429) && statuses.contains(&200), "{statuses:?}");

    phase("Ctrl-C stops every process; nothing is left listening");
    dev.signal(SIGINT);
    assert!(dev.wait_exit(Duration::from_secs(30)).is_some(), "dev did not exit");
    for port in
        [http, http + 1, http + 2, admin, admin + 1, admin + 2, internal + 60, internal + 61, internal + 62]
    {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        assert!(!accepts_connections(addr), "port {port} still listening");
    }
}

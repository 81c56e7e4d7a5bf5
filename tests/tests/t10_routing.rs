//! Routing basics through a real node and real upstreams: matching, strip_prefix, headers.

use std::time::Duration;

use meridian_tests::*;

#[test]
fn routes_by_host_prefix_and_method_and_stamps_headers() {
    let dir = TempDir::new("t10");
    let api = Upstream::start("api", dir.path());
    let web = Upstream::start("web", dir.path());
    let table = json!({
        "services": {
            "api": { "endpoints": { "us": [api.url()] } },
            "web": { "endpoints": { "us": [web.url()] } }
        },
        "routes": [
            { "name": "root", "path_prefix": "/", "service": "web" },
            { "name": "api", "path_prefix": "/api", "strip_prefix": true, "service": "api" },
            { "name": "writes", "path_prefix": "/w", "methods": ["POST"], "service": "api" },
            { "name": "admin-host", "path_prefix": "/", "host": "admin.example.com", "service": "api" }
        ]
    });
    let routes = dir.write("routes.json", &table.to_string());
    let node = Node::start("n1", "us", &["--routes", routes.to_str().unwrap()], dir.path());
    node.wait_ready(Duration::from_secs(10));

    phase("longest prefix wins and strip_prefix rewrites the path");
    let r = node.get("/api/users?x=1");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["name"], "api");
    assert_eq!(j["path"], "/users");
    assert_eq!(j["query"], "x=1");
    assert_eq!(node.get("/apiary").json()["name"], "web", "prefixes match on segment boundaries");

    phase("every response carries request id, region and node");
    assert_eq!(r.header("x-meridian-region"), Some("us"));
    assert_eq!(r.header("x-meridian-node"), Some("n1"));
    let rid = r.header("x-request-id").expect("generated request id");
    assert_eq!(rid.len(), 32);
    assert_eq!(j["request_id"], rid, "the upstream saw the same id");
    let r = request(node.http, "GET", "/", &[("x-request-id", "client-chosen-1")], b"");
    assert_eq!(r.header("x-request-id"), Some("client-chosen-1"));
    assert_eq!(r.json()["request_id"], "client-chosen-1");

    phase("forwarding headers reach the upstream; hop-by-hop ones do not");
    let r = request(
        node.http,
        "GET",
        "/",
        &[("x-forwarded-for", "203.0.113.9"), ("keep-alive", "timeout=5")],
        b"",
    );
    let j = r.json();
    assert_eq!(j["x_forwarded_for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(j["x_forwarded_proto"], "http");
    assert!(j["connection"].is_null(), "connection header must not be forwarded: {j}");

    phase("method and host matchers");
    assert_eq!(request(node.http, "POST", "/w/1", &[], b"x").json()["name"], "api");
    assert_eq!(node.get("/w/1").json()["name"], "web", "GET /w falls through to the root route");
    let r = raw(
        node.http,
        b"GET /anything HTTP/1.1\r\nhost: admin.example.com:8080\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .expect("host request");
    assert_eq!(r.json()["name"], "api");

    phase("no route is a JSON 404 with the request id");
    let only_api = json!({
        "services": { "api": { "endpoints": { "us": [api.url()] } } },
        "routes": [ { "name": "api", "path_prefix": "/api", "service": "api" } ]
    });
    let r = request(
        node.admin,
        "PUT",
        "/routes",
        &[("content-type", "application/json")],
        only_api.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = node.get("/nothing-here");
    assert_eq!(r.status, 404);
    let j = r.json();
    assert_eq!(j["error"], "no_route");
    assert_eq!(j["request_id"], r.header("x-request-id").expect("id"));
    assert_eq!(r.header("x-meridian-node"), Some("n1"));
}

#[test]
fn toml_routes_file_and_h2c_clients_work() {
    let dir = TempDir::new("t10-toml");
    let up = Upstream::start("u", dir.path());
    let routes = dir.write(
        "routes.toml",
        &format!(
            "[services.echo]\nendpoints = {{ us = [\"{}\"] }}\n\n[[routes]]\nname = \"all\"\nservice = \"echo\"\n",
            up.url()
        ),
    );
    let node = Node::start("n1", "us", &["--routes", routes.to_str().unwrap()], dir.path());
    node.wait_ready(Duration::from_secs(10));
    assert_eq!(node.get("/x").json()["name"], "u");
    // HTTP/2 with prior knowledge: the client preface, then we only check the server answers with
    // an HTTP/2 SETTINGS frame (type 0x4) rather than an HTTP/1 error.
    let mut s = std::net::TcpStream::connect(node.http).expect("connect");
    use std::io::{Read, Write};
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").expect("preface");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut frame = [0u8; 9];
    s.read_exact(&mut frame).expect("settings frame");
    assert_eq!(frame[3], 0x4, "first frame from the server is SETTINGS");
}

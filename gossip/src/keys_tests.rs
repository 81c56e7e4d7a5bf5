use super::*;

fn sample_facts() -> NodeFacts {
    let mut services = BTreeMap::new();
    services.insert("echo".to_owned(), ServiceHealth { healthy: 2, total: 3 });
    services.insert("billing".to_owned(), ServiceHealth { healthy: 0, total: 1 });
    NodeFacts {
        region: "us".to_owned(),
        http_addr: "10.0.1.5:8080".to_owned(),
        admin_addr: "127.0.0.1:9901".to_owned(),
        peer_addr: "node-1.us.example:7947".to_owned(),
        routing_version: 42,
        raft_role: "follower".to_owned(),
        services,
        load: 17,
        draining: false,
    }
}

fn decode_map(keys: &BTreeMap<String, String>) -> Decoded {
    decode("test", keys.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

#[test]
fn round_trip_keeps_every_fact() {
    let facts = sample_facts();
    let encoded = encode("prod", &facts, false);
    assert!(encoded.rejected.is_empty(), "{:?}", encoded.rejected);
    assert_eq!(encoded.keys.get("svc:echo").map(String::as_str), Some("2/3"));
    assert_eq!(encoded.keys.get(LEFT).map(String::as_str), Some("false"));
    let decoded = decode_map(&encoded.keys);
    assert_eq!(decoded.cluster_id.as_deref(), Some("prod"));
    assert_eq!(decoded.facts, facts);
    assert!(!decoded.left);

    let left = decode_map(&encode("prod", &facts, true).keys);
    assert!(left.left);
}

#[test]
fn default_facts_round_trip() {
    let encoded = encode("c", &NodeFacts::default(), false);
    assert!(encoded.rejected.is_empty(), "{:?}", encoded.rejected);
    assert_eq!(decode_map(&encoded.keys).facts, NodeFacts::default());
}

#[test]
fn garbage_values_are_ignored_and_the_rest_is_kept() {
    let long = "x".repeat(MAX_VALUE_LEN + 1);
    let kvs = [
        (CLUSTER, "prod"),
        (REGION, "eu\u{7}"),
        (HTTP, "not an address"),
        (ADMIN, "10.0.0.1"),
        (PEER, "[::1]:7947"),
        (ROUTING_VERSION, "18446744073709551616"),
        (RAFT_ROLE, "emperor"),
        (LOAD, "-3"),
        (DRAINING, "yes"),
        (LEFT, "1"),
        ("svc:ok", "1/1"),
        ("svc:inverted", "5/2"),
        ("svc:three", "1/2/3"),
        ("svc:spaces", " 1/2"),
        ("svc:plus", "+1/2"),
        ("svc:huge", "4294967296/4294967296"),
        ("svc:", "1/1"),
        ("svc:long", long.as_str()),
        ("unknown_future_key", "whatever"),
    ];
    let decoded = decode("test", kvs);
    assert_eq!(decoded.cluster_id.as_deref(), Some("prod"));
    let expected = NodeFacts {
        peer_addr: "[::1]:7947".to_owned(),
        services: [("ok".to_owned(), ServiceHealth { healthy: 1, total: 1 })].into(),
        ..NodeFacts::default()
    };
    assert_eq!(decoded.facts, expected);
    assert!(!decoded.left, "only the exact string `true` sets left");
}

#[test]
fn non_utf8_lookalikes_and_odd_digits_are_rejected() {
    assert!(parse_u64("١٢").is_err(), "non-ASCII digits");
    assert!(parse_u64("").is_err());
    assert!(parse_u64(" 1").is_err());
    assert!(parse_u32("4294967296").is_err());
    assert_eq!(parse_u64("18446744073709551615"), Ok(u64::MAX));
    assert!(parse_bool("TRUE").is_err());
}

#[test]
fn addresses_accept_ip_and_dns_forms_only() {
    for ok in ["", "10.0.0.1:80", "[::1]:80", "node-1.example:7947", "localhost:9901"] {
        assert_eq!(parse_addr(ok).as_deref(), Ok(ok), "{ok}");
    }
    for bad in ["10.0.0.1", ":80", "host:99999", "ho st:80", "[::1:80", "a..b:80", "h:", "h:-1", "x/y:80"] {
        assert!(parse_addr(bad).is_err(), "{bad} should be rejected");
    }
}

#[test]
fn missing_or_empty_cluster_id_is_unknown() {
    assert_eq!(decode("t", [(REGION, "us")]).cluster_id, None);
    assert_eq!(decode("t", [(CLUSTER, "")]).cluster_id, None);
}

#[test]
fn too_many_services_are_cut_on_both_sides() {
    let mut facts = NodeFacts::default();
    for i in 0..MAX_SERVICES + 5 {
        facts.services.insert(format!("s{i:05}"), ServiceHealth { healthy: 1, total: 1 });
    }
    let encoded = encode("c", &facts, false);
    assert_eq!(encoded.rejected, vec![SchemaError::TooManyServices { count: MAX_SERVICES + 5 }]);
    let published = encoded.keys.keys().filter(|k| k.starts_with(SERVICE_PREFIX)).count();
    assert_eq!(published, MAX_SERVICES);

    // A forged peer may publish more than we would; the reader cuts them too.
    let keys: Vec<(String, String)> =
        (0..MAX_SERVICES + 500).map(|i| (service_key(&format!("s{i:05}")), "1/1".to_owned())).collect();
    let decoded = decode("t", keys.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    assert_eq!(decoded.facts.services.len(), MAX_SERVICES);
}

#[test]
fn encode_reports_what_it_cannot_publish() {
    let mut facts = sample_facts();
    facts.region = "r".repeat(MAX_VALUE_LEN + 1);
    facts.raft_role = "emperor".to_owned();
    facts.http_addr = "nowhere".to_owned();
    facts.services.insert("x".repeat(MAX_SERVICE_NAME_LEN + 1), ServiceHealth::default());
    facts.services.insert("bad".to_owned(), ServiceHealth { healthy: 3, total: 1 });
    let encoded = encode("c", &facts, false);
    assert_eq!(encoded.rejected.len(), 5, "{:?}", encoded.rejected);
    for key in [REGION, RAFT_ROLE, HTTP, "svc:bad"] {
        assert!(!encoded.keys.contains_key(key), "{key} should not be published");
    }
    assert_eq!(encoded.keys.get("svc:echo").map(String::as_str), Some("2/3"));
}

#[test]
fn random_garbage_never_panics() {
    // Deterministic xorshift: reproducible, and no extra dependency for a fuzz-ish sweep.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let keys =
        [CLUSTER, REGION, HTTP, ADMIN, PEER, ROUTING_VERSION, RAFT_ROLE, LOAD, DRAINING, LEFT, "svc:a"];
    for round in 0..2_000 {
        let len = (next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (next() % 256) as u8).collect();
        let value = String::from_utf8_lossy(&bytes);
        let key = keys[round % keys.len()];
        let _ = decode("fuzz", [(key, value.as_ref())]);
    }
}

//! Node configuration: flags, `MERIDIAN_*` environment variables and a TOML file, merged in that
//! order of precedence, then validated into typed values with errors that name the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;

/// Every setting of `meridian node`. All optional here so a flag, the environment and the file
/// can each supply any of them; `NodeConfig::resolve` applies defaults and checks.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Unique node id (letters, digits, '-', '_', '.').
    #[arg(long, env = "MERIDIAN_ID")]
    pub id: Option<String>,
    /// Region this node serves from.
    #[arg(long, env = "MERIDIAN_REGION")]
    pub region: Option<String>,
    /// Data-plane listen address [default: 0.0.0.0:8080].
    #[arg(long, env = "MERIDIAN_HTTP")]
    pub http: Option<SocketAddr>,
    /// Admin listen address [default: 127.0.0.1:9901].
    #[arg(long, env = "MERIDIAN_ADMIN")]
    pub admin: Option<SocketAddr>,
    /// Gossip (UDP) listen address [default: 0.0.0.0:7946].
    #[arg(long, env = "MERIDIAN_GOSSIP")]
    pub gossip: Option<SocketAddr>,
    /// Peer-plane (QUIC) listen address [default: 0.0.0.0:7947].
    #[arg(long, env = "MERIDIAN_PEER")]
    pub peer: Option<SocketAddr>,
    /// Host name or IP other nodes reach this one at.
    #[arg(long, env = "MERIDIAN_ADVERTISE")]
    pub advertise: Option<String>,
    /// Gossip seeds, HOST:PORT,...
    #[arg(long, env = "MERIDIAN_SEEDS", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// Bootstrap the cluster once this many members are seen.
    #[arg(long, env = "MERIDIAN_EXPECT")]
    pub expect: Option<usize>,
    /// Directory for durable state [default: ./meridian-data/ID].
    #[arg(long, env = "MERIDIAN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory with ca.pem, ID.pem and ID.key for the peer plane.
    #[arg(long, env = "MERIDIAN_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Routing table (JSON or TOML) to start with.
    #[arg(long, env = "MERIDIAN_ROUTES")]
    pub routes: Option<PathBuf>,
    /// File holding the admin bearer token, or `NAME ROLE TOKEN` lines (roles admin, read-only).
    #[arg(long, env = "MERIDIAN_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Log format: pretty or json [default: pretty].
    #[arg(long, env = "MERIDIAN_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, e.g. info or meridian=debug [default: info].
    #[arg(long, env = "MERIDIAN_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Requests in flight past which new ones get 503 [default: 10000].
    #[arg(long, env = "MERIDIAN_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<u32>,
    /// Largest request body, in bytes [default: 1073741824].
    #[arg(long, env = "MERIDIAN_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Largest request head, in bytes [default: 32768].
    #[arg(long, env = "MERIDIAN_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Time a client has to send its request head [default: 10000].
    #[arg(long, env = "MERIDIAN_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Time in-flight requests get to finish on shutdown [default: 30000].
    #[arg(long, env = "MERIDIAN_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Upstream connect timeout [default: 2000].
    #[arg(long, env = "MERIDIAN_CONNECT_TIMEOUT_MS")]
    pub connect_timeout_ms: Option<u64>,
    /// Retries allowed as a share of requests [default: 0.2].
    #[arg(long, env = "MERIDIAN_RETRY_BUDGET_RATIO")]
    pub retry_budget_ratio: Option<f64>,
    /// Retries always allowed per second per service [default: 10].
    #[arg(long, env = "MERIDIAN_RETRY_BUDGET_MIN_PER_SEC")]
    pub retry_budget_min_per_sec: Option<u32>,
    /// Tokio worker threads [default: one per core].
    #[arg(long, env = "MERIDIAN_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Cluster name; gossip from another cluster is ignored [default: meridian].
    #[arg(long, env = "MERIDIAN_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Time between gossip rounds [default: 200].
    #[arg(long, env = "MERIDIAN_GOSSIP_INTERVAL_MS")]
    pub gossip_interval_ms: Option<u64>,
    /// Raft timings: lan (heartbeat 100 ms) or wan (heartbeat 500 ms) [default: lan].
    #[arg(long, env = "MERIDIAN_RAFT_TIMINGS")]
    pub raft_timings: Option<String>,
    /// A voter gossip reports dead this long is replaced [default: 30000].
    #[arg(long, env = "MERIDIAN_VOTER_DEAD_AFTER_MS")]
    pub voter_dead_after_ms: Option<u64>,
}

impl NodeSettings {
    /// Fill every unset field of `self` from `other`.
    fn or(self, other: NodeSettings) -> NodeSettings {
        macro_rules! pick {
            ($($f:ident),*) => { NodeSettings { $($f: self.$f.or(other.$f)),* } };
        }
        pick!(
            id,
            region,
            http,
            admin,
            gossip,
            peer,
            advertise,
            seeds,
            expect,
            data_dir,
            tls_dir,
            routes,
            admin_token_file,
            log_format,
            log_level,
            max_in_flight,
            max_body_bytes,
            max_header_bytes,
            header_read_timeout_ms,
            drain_timeout_ms,
            connect_timeout_ms,
            retry_budget_ratio,
            retry_budget_min_per_sec,
            worker_threads,
            cluster_id,
            gossip_interval_ms,
            raft_timings,
            voter_dead_after_ms
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: String,
    pub region: String,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub gossip: SocketAddr,
    pub peer: SocketAddr,
    pub advertise: Option<String>,
    pub seeds: Vec<String>,
    pub expect: Option<usize>,
    pub data_dir: PathBuf,
    pub tls_dir: Option<PathBuf>,
    pub routes: Option<PathBuf>,
    /// Named admin tokens and their roles; `None`: the (loopback) admin API is open.
    pub admin_tokens: Option<crate::admin_tokens::AdminTokens>,
    /// Where they came from; re-read when it changes.
    pub admin_token_file: Option<PathBuf>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub max_in_flight: u32,
    pub max_body_bytes: u64,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry_budget_ratio: f64,
    pub retry_budget_min_per_sec: u32,
    pub worker_threads: Option<usize>,
    pub cluster_id: String,
    pub gossip_interval: Duration,
    pub raft_wan: bool,
    pub voter_dead_after: Duration,
}

impl NodeConfig {
    /// Cluster mode: gossip, Raft and the peer plane. Needs `--tls-dir` (the peer plane is
    /// always mutual TLS).
    pub fn clustered(&self) -> bool {
        self.tls_dir.is_some()
    }

    /// Merge flags/env over the optional config file and validate.
    pub fn resolve(cli: NodeSettings, file: Option<&Path>) -> anyhow::Result<NodeConfig> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                let de = toml::Deserializer::new(&text);
                serde_path_to_error::deserialize::<_, NodeSettings>(de).map_err(|e| {
                    let at = e.path().to_string();
                    let inner = e.into_inner();
                    anyhow::anyhow!("config file {}: {at}: {}", path.display(), inner.message())
                })?
            }
            None => NodeSettings::default(),
        };
        Self::validate(cli.or(from_file))
    }

    fn validate(s: NodeSettings) -> anyhow::Result<NodeConfig> {
        let id = s.id.context("--id (MERIDIAN_ID, config key `id`) is required")?;
        check_name("id", &id)?;
        let region = s.region.context("--region (MERIDIAN_REGION, config key `region`) is required")?;
        check_name("region", &region)?;
        let admin = s.admin.unwrap_or_else(|| sock("127.0.0.1:9901"));
        let admin_tokens = match &s.admin_token_file {
            Some(path) => Some(crate::admin_tokens::AdminTokens::load(path)?),
            None => None,
        };
        if !admin.ip().is_loopback() && admin_tokens.is_none() {
            bail!(
                "admin: refusing to serve the admin API on non-loopback address {admin} without a token; \
                 set --admin-token-file or bind it to 127.0.0.1"
            );
        }
        let log_format = match s.log_format.as_deref().unwrap_or("pretty") {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => bail!("log_format: {other:?} must be pretty or json"),
        };
        let max_header_bytes = s.max_header_bytes.unwrap_or(32 * 1024);
        // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
        if !(8192..=1024 * 1024).contains(&max_header_bytes) {
            bail!("max_header_bytes: must be between 8192 and 1048576");
        }
        let ratio = s.retry_budget_ratio.unwrap_or(0.2);
        if !(0.0..=10.0).contains(&ratio) {
            bail!("retry_budget_ratio: must be between 0 and 10");
        }
        let ms = |v: Option<u64>, default: u64, name: &str| -> anyhow::Result<Duration> {
            let v = v.unwrap_or(default);
            if v == 0 {
                bail!("{name}: must be at least 1 ms");
            }
            Ok(Duration::from_millis(v))
        };
        if let Some(0) = s.worker_threads {
            bail!("worker_threads: must be at least 1");
        }
        if let Some(0) = s.max_in_flight {
            bail!("max_in_flight: must be at least 1");
        }
        if s.tls_dir.is_none() && (s.seeds.as_ref().is_some_and(|v| !v.is_empty()) || s.expect.is_some()) {
            bail!("tls_dir: --seeds and --expect need --tls-dir (the peer plane is always mutual TLS); see `meridian certs`");
        }
        if s.expect == Some(0) {
            bail!("expect: must be at least 1");
        }
        let raft_wan = match s.raft_timings.as_deref().unwrap_or("lan") {
            "lan" => false,
            "wan" => true,
            other => bail!("raft_timings: {other:?} must be lan or wan"),
        };
        let cluster_id = s.cluster_id.clone().unwrap_or_else(|| "meridian".to_string());
        check_name("cluster_id", &cluster_id)?;
        Ok(NodeConfig {
            data_dir: s.data_dir.unwrap_or_else(|| PathBuf::from("meridian-data").join(&id)),
            id,
            region,
            http: s.http.unwrap_or_else(|| sock("0.0.0.0:8080")),
            admin,
            gossip: s.gossip.unwrap_or_else(|| sock("0.0.0.0:7946")),
            peer: s.peer.unwrap_or_else(|| sock("0.0.0.0:7947")),
            advertise: s.advertise,
            seeds: s.seeds.unwrap_or_default().into_iter().filter(|x| !x.is_empty()).collect(),
            expect: s.expect,
            tls_dir: s.tls_dir,
            routes: s.routes,
            admin_tokens,
            admin_token_file: s.admin_token_file.clone(),
            log_format,
            log_level: s.log_level.unwrap_or_else(|| "info".to_string()),
            max_in_flight: s.max_in_flight.unwrap_or(10_000),
            max_body_bytes: s.max_body_bytes.unwrap_or(1 << 30),
            max_header_bytes,
            header_read_timeout: ms(s.header_read_timeout_ms, 10_000, "header_read_timeout_ms")?,
            drain_timeout: ms(s.drain_timeout_ms, 30_000, "drain_timeout_ms")?,
            connect_timeout: ms(s.connect_timeout_ms, 2_000, "connect_timeout_ms")?,
            retry_budget_ratio: ratio,
            retry_budget_min_per_sec: s.retry_budget_min_per_sec.unwrap_or(10),
            worker_threads: s.worker_threads,
            cluster_id,
            gossip_interval: ms(s.gossip_interval_ms, 200, "gossip_interval_ms")?,
            raft_wan,
            voter_dead_after: ms(s.voter_dead_after_ms, 30_000, "voter_dead_after_ms")?,
        })
    }
}

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("constant socket address")
}

fn check_name(field: &str, v: &str) -> anyhow::Result<()> {
    if v.is_empty() || v.len() > 128 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        bail!("{field}: {v:?} must be 1-128 characters of [A-Za-z0-9_.-]");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> NodeSettings {
        NodeSettings { id: Some("n1".into()), region: Some("us".into()), ..Default::default() }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = NodeConfig::validate(base()).expect("valid");
        assert_eq!(c.http, sock("0.0.0.0:8080"));
        assert_eq!(c.admin, sock("127.0.0.1:9901"));
        assert_eq!(c.gossip, sock("0.0.0.0:7946"));
        assert_eq!(c.peer, sock("0.0.0.0:7947"));
    }

    #[test]
    fn public_admin_without_token_is_refused() {
        let mut s = base();
        s.admin = Some(sock("0.0.0.0:9901"));
        let e = NodeConfig::validate(s).unwrap_err().to_string();
        assert!(e.contains("admin"), "{e}");
    }

    #[test]
    fn flags_win_over_the_file_and_unknown_keys_fail() {
        let dir = std::env::temp_dir().join(format!("meridian-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("node.toml");
        std::fs::write(&file, "id = \"from-file\"\nregion = \"eu\"\nhttp = \"127.0.0.1:1\"\n")
            .expect("write");
        let cli = NodeSettings { id: Some("from-flag".into()), ..Default::default() };
        let c = NodeConfig::resolve(cli, Some(&file)).expect("valid");
        assert_eq!(c.id, "from-flag");
        assert_eq!(c.region, "eu");
        std::fs::write(&file, "id = \"x\"\nregion = \"eu\"\nhtpp = \"127.0.0.1:1\"\n").expect("write");
        let e = format!("{:#}", NodeConfig::resolve(NodeSettings::default(), Some(&file)).unwrap_err());
        assert!(e.contains("htpp"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

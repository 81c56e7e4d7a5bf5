//! The `meridian` binary: one command per role (see `meridian --help`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meridian::config::{NodeConfig, NodeSettings};

// The proxy allocates a few small objects per request (headers, buffers); mimalloc's thread-local
// free lists make that markedly cheaper than glibc's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "meridian", version, about = "Multi-region API gateway")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a gateway node.
    Node {
        /// TOML config file; flags and MERIDIAN_* variables override it.
        #[arg(long, env = "MERIDIAN_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Box<NodeSettings>,
    },
    /// Run a whole local multi-region setup with demo upstreams.
    Dev(meridian::dev::DevArgs),
    /// Run a small demo/test upstream.
    Upstream(meridian::demo_upstream::UpstreamArgs),
    /// Talk to a node's admin API.
    Ctl(meridian::ctl::CtlArgs),
    /// Create the cluster CA (or reuse the one in --out) and a certificate per node.
    Certs(meridian::certs::CertsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Node { config, settings } => run_node(*settings, config),
        Cmd::Dev(args) => runtime(None).and_then(|rt| rt.block_on(meridian::dev::run(args))),
        Cmd::Upstream(args) => {
            meridian::logging::init(meridian::config::LogFormat::Pretty, "warn");
            runtime(None).and_then(|rt| rt.block_on(meridian::demo_upstream::run(args)))
        }
        Cmd::Ctl(args) => runtime(Some(1)).and_then(|rt| rt.block_on(meridian::ctl::run(args))),
        Cmd::Certs(args) => meridian::certs::run(&args).map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meridian: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_node(settings: NodeSettings, config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = NodeConfig::resolve(settings, config.as_deref())?;
    meridian::logging::init(cfg.log_format, &cfg.log_level);
    runtime(cfg.worker_threads)?.block_on(meridian::node::run(cfg))
}

/// One worker thread means a current-thread runtime: no work-stealing machinery or cross-thread
/// wake-ups, which is what a one-process-per-core deployment wants.
fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all();
    Ok(b.build()?)
}

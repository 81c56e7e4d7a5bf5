//! `meridian ctl`: the admin API from a terminal, as tables (`render.rs`) or JSON (`--json`).

pub mod render;

use std::path::PathBuf;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Admin URL of any node.
    #[arg(long, env = "MERIDIAN_ADMIN_URL", default_value = "http://127.0.0.1:9901")]
    pub admin: String,
    /// File holding the admin bearer token.
    #[arg(long, env = "MERIDIAN_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the admin API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Members, Raft state and routing versions.
    Cluster,
    /// The routing table.
    Routes {
        #[command(subcommand)]
        cmd: RoutesCommand,
    },
    /// Quotas with their leases and counts.
    Quotas,
}

#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// Print the current table and its version.
    Get,
    /// Replace the table with FILE (JSON, or TOML if it ends in .toml).
    Put {
        file: PathBuf,
        /// Only if the current version is still V.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Past versions.
    History,
    /// Commit version V's table again as a new version.
    Rollback { version: u64 },
}

pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let render: fn(&serde_json::Value) -> String = match &args.cmd {
        CtlCommand::Cluster => render::cluster,
        CtlCommand::Quotas => render::quotas,
        CtlCommand::Routes { cmd: RoutesCommand::Get } => render::routes,
        CtlCommand::Routes { cmd: RoutesCommand::History } => render::history,
        CtlCommand::Routes { cmd: RoutesCommand::Put { .. } | RoutesCommand::Rollback { .. } } => {
            render::written
        }
    };
    let (method, path, body, content_type, if_match) = match args.cmd {
        CtlCommand::Cluster => (Method::GET, "/cluster", Bytes::new(), None, None),
        CtlCommand::Quotas => (Method::GET, "/quotas", Bytes::new(), None, None),
        CtlCommand::Routes { cmd } => match cmd {
            RoutesCommand::Get => (Method::GET, "/routes", Bytes::new(), None, None),
            RoutesCommand::History => (Method::GET, "/routes/history", Bytes::new(), None, None),
            RoutesCommand::Put { file, if_match } => {
                let text = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let ct = if file.extension().is_some_and(|e| e == "toml") {
                    "application/toml"
                } else {
                    "application/json"
                };
                (Method::PUT, "/routes", Bytes::from(text), Some(ct), if_match)
            }
            RoutesCommand::Rollback { version } => (
                Method::POST,
                "/routes/rollback",
                Bytes::from(serde_json::json!({"to": version}).to_string()),
                Some("application/json"),
                None,
            ),
        },
    };
    let base: http::Uri =
        args.admin.parse().with_context(|| format!("--admin {:?} is not a URL", args.admin))?;
    let authority = base.authority().context("--admin needs a host:port")?.clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("connecting to the admin API at {authority}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header(header::HOST, authority.as_str());
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    if let Some(v) = if_match {
        req = req.header(header::IF_MATCH, v.to_string());
    }
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = sender.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let parsed = serde_json::from_slice::<serde_json::Value>(&bytes);
    if !status.is_success() {
        let detail = match &parsed {
            Ok(v) if !args.json => v["error"].as_str().map_or_else(|| v.to_string(), str::to_string),
            Ok(v) => serde_json::to_string_pretty(v)?,
            Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        eprintln!("{detail}");
        if let Some(problems) =
            parsed.as_ref().ok().and_then(|v| v["problems"].as_array()).filter(|_| !args.json)
        {
            for p in problems {
                eprintln!("  - {}", p.as_str().unwrap_or_default());
            }
        }
        bail!("admin API answered {status}");
    }
    match parsed {
        Ok(v) if args.json => println!("{}", serde_json::to_string_pretty(&v)?),
        Ok(v) => print!("{}", render(&v)),
        Err(_) => println!("{}", String::from_utf8_lossy(&bytes)),
    }
    Ok(())
}

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
    /// File holding the admin bearer token: the token alone, or the node's `NAME ROLE TOKEN`
    /// lines (then `--as` picks one when there are several).
    #[arg(long, env = "MERIDIAN_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Which named token of `--token-file` to use.
    #[arg(long = "as", env = "MERIDIAN_ADMIN_TOKEN_NAME", value_name = "NAME")]
    pub token_name: Option<String>,
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
    /// Who changed the routing table, when, through which node, and what changed.
    Audit {
        /// How many records, newest first (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
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
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                pick_token(&text, args.token_name.as_deref())
                    .with_context(|| format!("token file {}", p.display()))?,
            )
        }
        None => None,
    };
    let render: fn(&serde_json::Value) -> String = match &args.cmd {
        CtlCommand::Cluster => render::cluster,
        CtlCommand::Quotas => render::quotas,
        CtlCommand::Audit { .. } => render::audit,
        CtlCommand::Routes { cmd: RoutesCommand::Get } => render::routes,
        CtlCommand::Routes { cmd: RoutesCommand::History } => render::history,
        CtlCommand::Routes { cmd: RoutesCommand::Put { .. } | RoutesCommand::Rollback { .. } } => {
            render::written
        }
    };
    let audit_path;
    let (method, path, body, content_type, if_match) = match args.cmd {
        CtlCommand::Cluster => (Method::GET, "/cluster", Bytes::new(), None, None),
        CtlCommand::Audit { limit } => {
            audit_path = format!("/audit?limit={limit}");
            (Method::GET, audit_path.as_str(), Bytes::new(), None, None)
        }
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

/// The token to send, from a file holding either the token alone or `NAME ROLE TOKEN` lines.
fn pick_token(text: &str, name: Option<&str>) -> anyhow::Result<String> {
    let lines = crate::admin_tokens::entries_of(text);
    if let [(_, fields)] = lines.as_slice() {
        if let [token] = fields.as_slice() {
            return Ok((*token).to_string());
        }
    }
    let named: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|(_, f)| if let [n, _, t] = f.as_slice() { Some((*n, *t)) } else { None })
        .collect();
    match (name, named.as_slice()) {
        (None, [(_, t)]) => Ok((*t).to_string()),
        (None, []) => bail!("no token found"),
        (None, _) => bail!("holds several tokens: choose one with --as NAME"),
        (Some(want), _) => named
            .iter()
            .find(|(n, _)| *n == want)
            .map(|(_, t)| (*t).to_string())
            .with_context(|| format!("no token named {want:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::pick_token;

    #[test]
    fn tokens_are_picked_from_either_file_form() {
        assert_eq!(pick_token("abcdefabcdefabcdef\n", None).unwrap(), "abcdefabcdefabcdef");
        let file = "# n r t\nops admin AAAAAAAAAAAAAAAA\ngrafana read-only BBBBBBBBBBBBBBBB\n";
        assert_eq!(pick_token(file, Some("grafana")).unwrap(), "BBBBBBBBBBBBBBBB");
        assert!(pick_token(file, None).unwrap_err().to_string().contains("--as"));
        assert!(pick_token(file, Some("nobody")).is_err());
        assert_eq!(pick_token("ops admin AAAAAAAAAAAAAAAA", None).unwrap(), "AAAAAAAAAAAAAAAA");
    }
}

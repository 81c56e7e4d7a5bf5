//! The `meridian certs` command line: which one step the flags ask for, and what is printed.
//!
//! Owns the flags and the operator-facing output; what each step writes is `certs.rs` (first
//! issue) and `rotation.rs` (renewal and CA rollover).

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use super::rotation::{self, chains_to, describe, node_certificates, require_ca, subject};
use super::{issue, CertError, CA_CERT_FILE, CA_KEY_FILE};

/// `meridian certs --out DIR --nodes ID,ID,...`, and the steps of renewal and CA rollover:
/// `--renew --nodes ...`, `--new-ca`, `--drop-old-ca` (one step per run).
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory for ca.pem, ca.key and one ID.pem/ID.key pair per node. An existing CA there is
    /// reused, so nodes can be added later.
    #[arg(long)]
    pub out: PathBuf,
    /// Node ids to issue certificates for (letters, digits, '_', '.', '-'). Nodes that already
    /// have a pair keep it, unless --renew is given.
    #[arg(long, value_delimiter = ',', required_unless_present_any = ["new_ca", "drop_old_ca"])]
    pub nodes: Vec<String>,
    /// Replace the named nodes' certificates and keys with new ones from the issuing CA
    /// (renewal, or step 2 of a CA rollover). Every named node must already have a pair.
    #[arg(long)]
    pub renew: bool,
    /// Step 1 of a CA rollover: create a new CA and write ca.pem as the bundle new + old, so that
    /// nodes given it trust both; the old CA is kept in old-ca/. Certificates are issued by the
    /// new CA from then on.
    #[arg(long)]
    pub new_ca: bool,
    /// Step 3 of a CA rollover: write ca.pem with the issuing (new) CA only. Refused while a node
    /// certificate in the directory is not from that CA.
    #[arg(long)]
    pub drop_old_ca: bool,
}

/// What one `meridian certs` run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertsAction {
    /// Create the CA if there is none; issue a pair for each node that has none.
    Issue(Vec<String>),
    /// Replace existing node pairs with new ones from the issuing CA.
    Renew(Vec<String>),
    /// Start a CA rollover.
    NewCa,
    /// Finish a CA rollover.
    DropOldCa,
}

impl CertsArgs {
    /// The one step these flags ask for; combinations that would mix steps are refused, since
    /// each step must reach every node before the next one is safe.
    pub fn action(&self) -> Result<CertsAction, CertError> {
        let nodes = !self.nodes.is_empty();
        match (self.renew, self.new_ca, self.drop_old_ca) {
            (false, false, false) if nodes => Ok(CertsAction::Issue(self.nodes.clone())),
            (false, false, false) => Err(CertError::NoNodes),
            (true, false, false) if nodes => Ok(CertsAction::Renew(self.nodes.clone())),
            (true, false, false) => Err(CertError::Usage("--renew needs --nodes ID,... (the nodes to renew)")),
            (false, true, false) if !nodes => Ok(CertsAction::NewCa),
            (false, false, true) if !nodes => Ok(CertsAction::DropOldCa),
            (_, true, true) => Err(CertError::Usage(
                "--new-ca starts a rollover and --drop-old-ca finishes it: give every node the bundle \
                 and a renewed certificate in between, so run them separately",
            )),
            (true, true, _) | (false, true, _) => Err(CertError::Usage(
                "--new-ca only starts a rollover and issues no node certificate: give every node the new \
                 ca.pem first, then renew them with --renew --nodes ID,...",
            )),
            (true, _, true) | (false, _, true) => Err(CertError::Usage(
                "--drop-old-ca only rewrites ca.pem; renew node certificates in a run of their own, before it",
            )),
        }
    }
}

/// The command: do the one step asked for, then say what was written.
pub fn run(args: &CertsArgs) -> Result<(), CertError> {
    match args.action()? {
        CertsAction::Issue(nodes) => run_issue(&args.out, &nodes)?,
        CertsAction::Renew(nodes) => run_renew(&args.out, &nodes)?,
        CertsAction::NewCa => run_new_ca(&args.out)?,
        CertsAction::DropOldCa => run_drop_old_ca(&args.out)?,
    }
    print_state(&args.out);
    Ok(())
}

fn run_issue(out: &Path, nodes: &[String]) -> Result<(), CertError> {
    let report = issue(out, nodes)?;
    let dir = out.display();
    if report.ca_created {
        println!("created cluster CA {dir}/{CA_CERT_FILE} (key {dir}/{CA_KEY_FILE}: keep it off the nodes)");
    } else {
        println!("reused cluster CA {dir}/{CA_CERT_FILE}");
    }
    for id in &report.issued {
        println!("issued {dir}/{id}.pem and {dir}/{id}.key");
    }
    for id in &report.kept {
        println!("kept existing {dir}/{id}.pem and {dir}/{id}.key");
    }
    Ok(())
}

fn run_renew(dir: &Path, nodes: &[String]) -> Result<(), CertError> {
    rotation::renew(dir, nodes)?;
    let d = dir.display();
    for id in nodes {
        println!("renewed {d}/{id}.pem and {d}/{id}.key (the old pair is replaced)");
    }
    println!("next: give each node its new pair (its ca.pem must already trust the issuing CA); nodes reload within seconds");
    Ok(())
}

fn run_new_ca(dir: &Path) -> Result<(), CertError> {
    let r = rotation::start_rollover(dir)?;
    let d = dir.display();
    println!("created a new CA: {d}/{CA_KEY_FILE} is its key; {d}/{CA_CERT_FILE} now trusts the new CA and the old one");
    println!("kept the old CA as {} and {}", r.archived_cert.display(), r.archived_key.display());
    println!("next: give every node the new {CA_CERT_FILE}, wait until each has reloaded it, then renew every node with --renew --nodes ID,...");
    Ok(())
}

fn run_drop_old_ca(dir: &Path) -> Result<(), CertError> {
    let dropped = rotation::finish_rollover(dir)?;
    let d = dir.display();
    println!("dropped {dropped} old CA(s): {d}/{CA_CERT_FILE} trusts the issuing CA only");
    println!("next: give every node the new {CA_CERT_FILE}; nodes still holding a certificate from an old CA are refused once it is loaded");
    Ok(())
}

/// Print what `dir` holds now: the CAs of the bundle and where each node certificate comes from.
/// Best effort, for the operator; a directory that cannot be read prints nothing.
fn print_state(dir: &Path) {
    let Ok(text) = fs::read(dir.join(CA_CERT_FILE)) else { return };
    let bundle: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&text).filter_map(Result::ok).collect();
    let issuing = require_ca(dir).ok().map(|ca| ca.issuing);
    println!("{}/{CA_CERT_FILE} trusts {} CA(s):", dir.display(), bundle.len());
    for der in &bundle {
        let mark = if issuing.as_ref() == Some(der) { ", issuing" } else { "" };
        println!("  {}{mark}", describe(der));
    }
    for (id, der) in node_certificates(dir) {
        let from = bundle.iter().find(|ca| chains_to(&der, ca).is_ok()).map(|ca| subject(ca));
        let from = from.map_or_else(|| "a CA not in the bundle".to_string(), |s| format!("{s:?}"));
        println!("  node {id}: {} from {from}", describe(&der));
    }
}

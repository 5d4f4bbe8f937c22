//! `switchyard certs`: a throwaway CA and certificates for a local cluster or tests.

use std::path::PathBuf;

/// Settings of `certs`.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Where to write them.
    #[arg(long, default_value = "./switchyard-certs")]
    pub out: PathBuf,
    /// Host names and addresses the node certificates are valid for (repeatable, or
    /// comma-separated): every name clients and peers use to reach any node.
    #[arg(long = "host", value_delimiter = ',', default_values_t = ["127.0.0.1".to_string(), "localhost".to_string()])]
    pub hosts: Vec<String>,
    /// How many node certificates.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Client certificates to make, by identity (repeatable, or comma-separated).
    #[arg(long = "client", value_delimiter = ',')]
    pub clients: Vec<String>,
}

/// Runs `certs`.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    crate::tls::certs::create(&args.out, &args.hosts, args.nodes, &args.clients)?;
    println!(
        "wrote a throwaway CA, {} node certificates and {} client certificates to {} (for local use and tests only)",
        args.nodes,
        args.clients.len(),
        args.out.display()
    );
    Ok(())
}

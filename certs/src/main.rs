//! `triton-certs webhook --out DIR`: writes ca.crt, ca.key, tls.crt, tls.key and ca-bundle.b64.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use triton_certs::{Pem, ca_bundle, new_ca, service_dns_names, serving_cert};

#[derive(Parser)]
#[command(
    name = "triton-certs",
    version,
    about = "Certificates for triton-webhook without cert-manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make (or reuse) a CA and a serving certificate for the webhook Service.
    Webhook {
        /// Directory for ca.crt, ca.key, tls.crt, tls.key and ca-bundle.b64.
        #[arg(long, env = "TRITON_CERTS_OUT")]
        out: PathBuf,
        /// Name of the webhook Service.
        #[arg(long, default_value = "triton-webhook")]
        service: String,
        /// Namespace of the webhook Service.
        #[arg(long, default_value = "triton-system")]
        namespace: String,
        /// Extra DNS names for the certificate.
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IP addresses for the certificate (e.g. 127.0.0.1 for a webhook reached by URL).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Leave out the Service's DNS names (only --dns and --ip).
        #[arg(long)]
        no_service_names: bool,
        /// Validity of the serving certificate, in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Validity of a new CA, in days.
        #[arg(long, default_value_t = 3650)]
        ca_days: i64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Webhook {
            out,
            service,
            namespace,
            dns,
            ips,
            no_service_names,
            days,
            ca_days,
        } => {
            fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let (ca_crt, ca_key) = (out.join("ca.crt"), out.join("ca.key"));
            let ca = if ca_crt.exists() && ca_key.exists() {
                eprintln!("reusing the CA in {}", ca_crt.display());
                Pem {
                    cert: fs::read_to_string(&ca_crt)?,
                    key: fs::read_to_string(&ca_key)?,
                }
            } else {
                let ca = new_ca(&format!("{service}-ca"), ca_days)?;
                write(&ca_crt, &ca.cert, 0o644)?;
                write(&ca_key, &ca.key, 0o600)?;
                ca
            };
            let mut names = if no_service_names {
                vec![]
            } else {
                service_dns_names(&service, &namespace)
            };
            names.extend(dns);
            let leaf = serving_cert(&ca, &names, &ips, days)?;
            write(&out.join("tls.crt"), &leaf.cert, 0o644)?;
            write(&out.join("tls.key"), &leaf.key, 0o600)?;
            write(&out.join("ca-bundle.b64"), &ca_bundle(&ca.cert), 0o644)?;
            eprintln!(
                "wrote {}/{{ca.crt,ca.key,tls.crt,tls.key,ca-bundle.b64}} for {names:?} {ips:?}",
                out.display()
            );
            Ok(())
        }
    }
}

/// Writes atomically (temp file + rename), so a server watching the file never reads half of it.
fn write(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

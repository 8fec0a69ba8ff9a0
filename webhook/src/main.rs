use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = triton_webhook::Args::parse();
    triton_webhook::init_logging(&args.log_format);
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    triton_webhook::run(args).await?;
    Ok(())
}

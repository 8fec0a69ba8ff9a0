use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = triton_controller::Args::parse();
    triton_controller::init_logging(&args.log_format);
    triton_controller::run(args).await
}

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = triton_controller::Args::parse();
    triton_controller::init_logging(&args.log_format);
    triton_controller::run(args).await
}

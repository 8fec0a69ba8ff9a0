use clap::Parser;

/// In the images (static musl binaries), mimalloc rather than musl's malloc, with which the
/// controller spent about 1.8x the CPU (README, "Controller benchmark").
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = triton_controller::Args::parse();
    triton_controller::init_logging(&args.log_format);
    triton_controller::run(args).await
}

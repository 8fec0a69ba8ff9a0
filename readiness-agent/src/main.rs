use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use triton_agent::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    triton_agent::logging::init(args.log_format);
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => Args::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let result = runtime.block_on(async {
        let shutdown = triton_agent::shutdown_signal()?;
        triton_agent::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            ExitCode::FAILURE
        }
    }
}

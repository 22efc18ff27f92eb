//! truxe-server: configuration → telemetry → start-up. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use truxe_server::config::Config;
use truxe_server::startup::{Application, EXIT_CONFIG};
use truxe_server::telemetry;

/// Truxe: a self-hosted OAuth 2.1 and OpenID Connect provider.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Read configuration from this file (KEY=VALUE lines) under the environment, e.g. /etc/truxe/truxe.env
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(args.env_file.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("truxe-server: {errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Kept to the end of `main`: dropping it sends the queued error reports and spans.
    let _telemetry = telemetry::init(&config);

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("truxe-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let app = match Application::build(config).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("truxe-server: {e}");
                return ExitCode::from(e.exit_code());
            }
        };
        match app.run_until_stopped().await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("truxe-server: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

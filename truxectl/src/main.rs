//! truxectl: the Truxe admin CLI. One module per subcommand, dispatched from one enum.

mod audit;
mod clients;
mod db;
mod keys;
mod migrate;
mod secrets;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "truxectl", version, about = "Administer a Truxe server: migrations, keys, secrets")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand understands.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// Do not ask for confirmation before dangerous operations
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// Read configuration from this file under the environment (as truxe-server does)
    #[arg(long, value_name = "FILE", global = true)]
    pub env_file: Option<PathBuf>,
    /// Work on this database directly (postgres://… or sqlite://PATH); default: DATABASE_URL
    #[arg(long, value_name = "URL", global = true)]
    pub database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply, list or revert database migrations (default: apply everything pending)
    Migrate {
        #[command(subcommand)]
        command: Option<migrate::Command>,
    },
    /// Signing keys
    Keys {
        #[command(subcommand)]
        command: keys::Command,
    },
    /// Random secrets for SESSION_SECRET, ADMIN_TOKEN and the like
    Secrets {
        #[command(subcommand)]
        command: secrets::Command,
    },
    /// OAuth clients: create, list, show, update, rotate-secret, disable, enable, delete
    Clients {
        #[command(subcommand)]
        command: clients::Command,
    },
    /// Users: create, list, show, disable, enable, delete, mfa-reset, sessions
    Users {
        #[command(subcommand)]
        command: users::Command,
    },
    /// The audit log: list entries, verify the hash chain
    Audit {
        #[command(subcommand)]
        command: audit::Command,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Migrate { command } => migrate::run(command.unwrap_or_default(), &cli.global),
        Command::Keys { command } => keys::run(command, &cli.global),
        Command::Secrets { command } => secrets::run(command, &cli.global),
        Command::Clients { command } => clients::run(command, &cli.global),
        Command::Users { command } => users::run(command, &cli.global),
        // Exits by SPEC's statuses itself (1: the chain is broken, 78: configuration).
        Command::Audit { command } => return audit::run(command, &cli.global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line, without a backtrace.
            eprintln!("truxectl: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

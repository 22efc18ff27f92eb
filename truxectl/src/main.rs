//! truxectl: the Truxe admin CLI. One module per subcommand, dispatched from one enum.

mod audit;
mod backup;
mod clients;
mod codes;
mod completions;
mod db;
mod doctor;
mod exit;
mod keys;
mod man;
mod migrate;
mod secrets;
mod tokens;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "truxectl",
    version,
    about = "Administer a Truxe server: migrations, keys, secrets",
    after_long_help = exit::HELP
)]
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
        /// Print the plan (pending migrations, the tables each touches, their row counts) and
        /// change nothing
        #[arg(long)]
        dry_run: bool,
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
    /// The pre-launch checklist: one line per check (ok, warn, FAIL); exit 1 when any fails
    Doctor(doctor::DoctorOpts),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(completions::Opts),
    /// Print the manual page truxectl(1), or write one page per command with --out DIR
    Man(man::Opts),
    /// Authorization codes: inspect one (everything behind an invalid_grant), list recent ones
    Codes {
        #[command(subcommand)]
        command: codes::Command,
    },
    /// Access and refresh tokens: revoke by jti, client or user
    Tokens {
        #[command(subcommand)]
        command: tokens::Command,
    },
    /// Backups: create, list, prune, verify, restore
    Backup {
        #[command(subcommand)]
        command: backup::Command,
    },
    /// The audit log: list entries, verify the hash chain
    Audit {
        #[command(subcommand)]
        command: audit::Command,
    },
}

/// The whole command-line definition, for the generated completions and manual pages.
pub fn cli_command() -> clap::Command {
    Cli::command()
}

pub use exit::ExitError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Migrate { dry_run, command } => migrate::run(command.unwrap_or_default(), dry_run, &cli.global),
        Command::Keys { command } => keys::run(command, &cli.global),
        Command::Secrets { command } => secrets::run(command, &cli.global),
        Command::Clients { command } => clients::run(command, &cli.global),
        Command::Users { command } => users::run(command, &cli.global),
        Command::Doctor(opts) => return doctor::run(opts, &cli.global),
        Command::Completions(opts) => completions::run(&opts, cli_command()),
        Command::Man(opts) => man::run(&opts, &cli.global, cli_command()),
        Command::Codes { command } => codes::run(command, &cli.global),
        Command::Tokens { command } => tokens::run(command, &cli.global),
        Command::Backup { command } => backup::run(command, &cli.global),
        // Exits by SPEC's statuses itself (1: the chain is broken, 78: configuration).
        Command::Audit { command } => return audit::run(command, &cli.global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line, without a backtrace.
            eprintln!("truxectl: error: {error:#}");
            exit::code_for(&error)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn completions_takes_a_known_shell_and_refuses_others_as_usage_errors() {
        let cli = super::Cli::try_parse_from(["truxectl", "completions", "zsh"]).expect("zsh");
        assert!(matches!(cli.command, super::Command::Completions(_)));
        let err = super::Cli::try_parse_from(["truxectl", "completions", "tcsh"]).err().expect("tcsh is refused");
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().contains("possible values: bash, elvish, fish, powershell, zsh"), "{err}");
        let err = super::Cli::try_parse_from(["truxectl", "completions"]).err().expect("a shell is required");
        assert_eq!(err.exit_code(), 2, "{err}");
    }

    #[test]
    fn man_writes_to_stdout_or_into_a_directory() {
        let cli = super::Cli::try_parse_from(["truxectl", "man"]).expect("man");
        assert!(matches!(cli.command, super::Command::Man(super::man::Opts { out: None })));
        let cli = super::Cli::try_parse_from(["truxectl", "man", "--out", "/tmp/x"]).expect("man --out");
        assert!(matches!(cli.command, super::Command::Man(super::man::Opts { out: Some(_) })));
    }

    #[test]
    fn long_help_states_the_exit_codes() {
        let help = super::Cli::command().render_long_help().to_string();
        for code in ["0 ", "1 ", "2 ", "78 "] {
            assert!(help.contains(&format!("  {code}")), "exit code {code} missing in\n{help}");
        }
    }
}

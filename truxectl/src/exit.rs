//! Exit statuses (SPEC): 0 ok, 1 a check or operation failed, 2 usage (clap's own), 78 configuration.

use std::process::ExitCode;

use truxe_server::config::ConfigErrors;

/// A configuration that cannot work (sysexits EX_CONFIG), as `truxe-server` uses it: systemd
/// does not restart on it, and scripts can tell "fix the file" from "try again".
pub const CONFIG: u8 = 78;

/// The EXIT STATUS text of `truxectl --help` and the manual page.
pub const HELP: &str = "\
Exit status:
  0   success
  1   the operation failed, or what it checks does not hold (e.g. a database that cannot be reached)
  2   usage error: unknown command or option, a missing or malformed argument
  78  configuration error: DATABASE_URL, --env-file or another setting is invalid";

/// An error with the exit status SPEC gives it: 2 for a usage error, 78 (EX_CONFIG) for a
/// configuration error; every other error exits 1.
#[derive(Debug)]
pub struct ExitError {
    pub code: u8,
    pub message: String,
}

impl ExitError {
    pub const USAGE: u8 = 2;
    pub const CONFIG: u8 = CONFIG;

    pub fn config(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(ExitError { code: Self::CONFIG, message: message.into() })
    }
}

/// A usage error (exit 2): a value the command cannot work with, found after clap parsed it.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ExitError { code: ExitError::USAGE, message: message.into() })
}

/// What the command checks failed (exit 1), e.g. a code the token endpoint would refuse.
pub fn check_failed(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ExitError { code: 1, message: message.into() })
}

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitError {}

/// The status for an error that ended the command: an [`ExitError`]'s own, 78 when a
/// configuration problem is anywhere in its chain, else 1.
pub fn code_for(error: &anyhow::Error) -> ExitCode {
    for cause in error.chain() {
        if let Some(exit) = cause.downcast_ref::<ExitError>() {
            return ExitCode::from(exit.code);
        }
        if cause.is::<ConfigErrors>() {
            return ExitCode::from(CONFIG);
        }
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn configuration_errors_are_78_even_behind_context() {
        let error = anyhow::Error::from(ConfigErrors(vec!["DATABASE_URL: bad".into()])).context("opening the database");
        assert_eq!(code_for(&error), ExitCode::from(78));
        let wrapped: anyhow::Result<()> = Err(ConfigErrors(vec!["x".into()])).context("reading");
        assert_eq!(code_for(&wrapped.expect_err("error")), ExitCode::from(78));
    }

    #[test]
    fn statuses_survive_context() {
        assert_eq!(code_for(&usage("bad")), ExitCode::from(2));
        assert_eq!(code_for(&check_failed("no").context("while checking")), ExitCode::FAILURE);
        assert_eq!(code_for(&ExitError::config("bad file").context("reading")), ExitCode::from(78));
    }

    #[test]
    fn other_errors_are_1() {
        assert_eq!(code_for(&anyhow::anyhow!("connection refused")), ExitCode::FAILURE);
    }
}

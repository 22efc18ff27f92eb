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

/// The status for an error that ended the command: 78 when a configuration problem is anywhere
/// in its chain, else 1.
pub fn code_for(error: &anyhow::Error) -> ExitCode {
    if error.chain().any(|cause| cause.is::<ConfigErrors>()) { ExitCode::from(CONFIG) } else { ExitCode::FAILURE }
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
    fn other_errors_are_1() {
        assert_eq!(code_for(&anyhow::anyhow!("connection refused")), ExitCode::FAILURE);
    }
}

//! Exit statuses (SPEC): 0 success, 1 what the command checks failed, 2 a usage error, 78 a
//! configuration error. clap answers malformed command lines with 2 itself; everything else
//! that fails is 1 unless it is marked here.

use truxe_server::config::ConfigErrors;

pub const CHECK_FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const CONFIGURATION: u8 = 78;

/// An error that carries its exit status.
#[derive(Debug)]
pub struct Exit {
    pub status: u8,
    message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// A usage error (exit 2): a value the command cannot work with, found after clap parsed it.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Exit { status: USAGE, message: message.into() }.into()
}

/// What the command checks failed (exit 1), e.g. a code the token endpoint would refuse.
pub fn check_failed(message: impl Into<String>) -> anyhow::Error {
    Exit { status: CHECK_FAILED, message: message.into() }.into()
}

/// The exit status of a failed command.
pub fn status(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(exit) = cause.downcast_ref::<Exit>() {
            return exit.status;
        }
        if cause.is::<ConfigErrors>() {
            return CONFIGURATION;
        }
    }
    CHECK_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_survive_context() {
        assert_eq!(status(&usage("bad")), USAGE);
        assert_eq!(status(&check_failed("no").context("while checking")), CHECK_FAILED);
        assert_eq!(status(&anyhow::Error::new(ConfigErrors(vec!["x".into()])).context("reading")), CONFIGURATION);
        assert_eq!(status(&anyhow::anyhow!("anything else")), CHECK_FAILED);
    }
}

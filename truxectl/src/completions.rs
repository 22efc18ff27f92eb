//! `truxectl completions SHELL`: a completion script for the shell, generated from the clap
//! definition so that it never falls behind the commands.

use std::io::Write;

use clap_complete::Shell;

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// The shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Writes the script for `opts.shell` to stdout (install paths are in the README).
pub fn run(opts: &Opts, mut command: clap::Command) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    write(opts.shell, &mut command, &mut out)?;
    out.flush()?;
    Ok(())
}

fn write(shell: Shell, command: &mut clap::Command, out: &mut dyn Write) -> anyhow::Result<()> {
    let name = command.get_name().to_string();
    clap_complete::generate(shell, command, name, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        write(shell, &mut crate::cli_command(), &mut out).expect("generate");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn every_shell_gets_a_script_that_knows_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::Elvish, Shell::PowerShell] {
            let text = script(shell);
            for word in ["truxectl", "migrate", "clients", "completions", "man"] {
                assert!(text.contains(word), "{shell}: no {word:?} in\n{text}");
            }
        }
    }

    #[test]
    fn bash_registers_the_completion_function() {
        let text = script(Shell::Bash);
        assert!(text.contains("complete -F _truxectl"), "{text}");
        // Nested subcommands and their options are completed too.
        assert!(text.contains("--redirect-uri"), "{text}");
    }

    #[test]
    fn zsh_and_fish_use_their_own_formats() {
        assert!(script(Shell::Zsh).starts_with("#compdef truxectl"));
        assert!(script(Shell::Fish).contains("complete -c truxectl"));
    }
}

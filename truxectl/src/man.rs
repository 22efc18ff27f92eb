//! `truxectl man [--out DIR]`: manual pages in roff, generated from the clap definition.
//! `truxectl.1` goes to stdout; with `--out` every command gets its own page
//! (`truxectl.1`, `truxectl-clients.1`, `truxectl-clients-create.1` …), as packages install them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap_mangen::Man;

use crate::Global;

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Write one page per command into DIR (created if missing) instead of truxectl.1 to stdout
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(opts: &Opts, global: &Global, command: clap::Command) -> anyhow::Result<()> {
    let Some(dir) = &opts.out else {
        let mut out = std::io::stdout().lock();
        render(prepare(command), &mut out)?;
        out.flush()?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let written = write_all(prepare(command), dir)?;
    if global.json {
        let paths: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        println!("{}", serde_json::json!({ "written": paths }));
    } else {
        for path in &written {
            println!("{}", path.display());
        }
    }
    Ok(())
}

/// Built, so that subcommands carry their display names (`truxectl-clients-create`); without
/// the `help` subcommand, which needs no page.
fn prepare(command: clap::Command) -> clap::Command {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    command
}

fn page(command: clap::Command) -> Man {
    Man::new(command).section("1").manual("Truxe Manual").source(format!("Truxe {}", env!("CARGO_PKG_VERSION")))
}

/// The top-level page carries `after_long_help` (the exit statuses), which clap_mangen would
/// put under a heading "EXTRA": that page is rendered without it and gets an "EXIT STATUS"
/// section and the files an installed Truxe reads instead, before its VERSION section. The pages
/// of subcommands are clap_mangen's as they are.
fn render(command: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    if command.get_name() != "truxectl" {
        return page(command).render(out);
    }
    let mut text = Vec::new();
    page(command.after_long_help(None)).render(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let at = text.find(".SH VERSION").unwrap_or(text.len());
    out.write_all(text[..at].as_bytes())?;
    out.write_all(EXTRA_SECTIONS.as_bytes())?;
    out.write_all(text[at..].as_bytes())
}

/// Roff for the sections clap knows nothing about; the statuses match [`crate::exit::HELP`].
const EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
success
.TP
\fB1\fR
the operation failed, or what it checks does not hold (e.g. a database that cannot be reached)
.TP
\fB2\fR
usage error: unknown command or option, a missing or malformed argument
.TP
\fB78\fR
configuration error: DATABASE_URL, \-\-env\-file or another setting is invalid
.SH ENVIRONMENT
truxectl reads the configuration the way truxe\-server does: the environment, then the file given with \fB\-\-env\-file\fR, then \fI.env\fR in the working directory. \fBDATABASE_URL\fR selects the database (\fBpostgres://\fR... or \fBsqlite://\fR\fIPATH\fR); without it, the SQLite database in \fBTRUXE_DATA_DIR\fR (default \fI./truxe\-data\fR).
.SH FILES
.TP
\fI/etc/truxe/truxe.env\fR
the configuration of the packaged server (mode 0640, root:truxe); use it with \fB\-\-env\-file\fR
.TP
\fI/var/lib/truxe\fR
the server's data directory (TRUXE_DATA_DIR of the truxe\-api unit)
.TP
\fI/var/backups/truxe\fR
the daily backups of the truxe\-backup timer
.SH "SEE ALSO"
\fBsystemctl\fR(1), the units \fBtruxe\-api.service\fR, \fBtruxe\-backup.service\fR and \fBtruxe\-backup.timer\fR
"#;

/// Writes the page of `command` and of every visible subcommand below it; returns the paths,
/// parents before children.
fn write_all(command: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let children: Vec<clap::Command> = command.get_subcommands().filter(|c| !c.is_hide_set()).cloned().collect();
    let path = dir.join(page(command.clone()).get_filename());
    let mut file = std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    render(command, &mut file)
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = vec![path];
    for child in children {
        written.extend(write_all(child, dir)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn the_main_page_lists_the_subcommands_and_the_exit_codes() {
        let mut out = Vec::new();
        render(prepare(crate::cli_command()), &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with(".ie \\n(.g .ds Aq"), "roff: {}", &text[..80.min(text.len())]);
        assert!(text.contains(".TH truxectl 1"), "{text}");
        for word in ["migrate", "clients", "completions", "EXIT STATUS", "78"] {
            assert!(text.contains(word), "no {word:?} in\n{text}");
        }
    }

    #[test]
    fn out_writes_one_page_per_command() {
        let dir = tempfile::tempdir().expect("tmp");
        let written = write_all(prepare(crate::cli_command()), dir.path()).expect("write");
        let names = names(&written);
        assert_eq!(names[0], "truxectl.1");
        for name in ["truxectl-migrate.1", "truxectl-migrate-status.1", "truxectl-clients-create.1", "truxectl-man.1"] {
            assert!(names.iter().any(|n| n == name), "no {name} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "a page for `help`: {names:?}");
        for path in &written {
            let text = std::fs::read_to_string(path).expect("page");
            assert!(text.contains(".TH "), "{}: not a man page", path.display());
        }
        let create = std::fs::read_to_string(dir.path().join("truxectl-clients-create.1")).expect("page");
        assert!(create.contains("redirect\\-uri"), "{create}");
    }

    #[test]
    fn out_into_a_file_is_a_readable_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").expect("file");
        let global = Global { json: false, yes: false, env_file: None, database_url: None };
        let err = run(&Opts { out: Some(file.clone()) }, &global, crate::cli_command()).expect_err("a file");
        assert!(format!("{err:#}").contains(&format!("cannot create {}", file.display())), "{err:#}");
    }
}

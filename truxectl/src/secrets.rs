//! `truxectl secrets generate`: random values for SESSION_SECRET, ADMIN_TOKEN and the like.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::Global;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Print N random bytes from OpenSSL's CSPRNG as one line of base64
    Generate(GenerateOpts),
}

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateOpts {
    /// Random bytes before encoding (32 to 1024; 32 bytes give 44 characters)
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(32..=1024))]
    pub bytes: u32,
}

pub fn run(cmd: Command, global: &Global) -> anyhow::Result<()> {
    match cmd {
        Command::Generate(opts) => generate(&opts, global, &mut std::io::stdout().lock()),
    }
}

fn generate(opts: &GenerateOpts, global: &Global, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut bytes = vec![0u8; usize::try_from(opts.bytes)?];
    openssl::rand::rand_bytes(&mut bytes)?;
    let secret = STANDARD.encode(&bytes);
    if global.json {
        writeln!(out, "{}", serde_json::json!({ "secret": secret }))?;
    } else {
        writeln!(out, "{secret}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> Result<GenerateOpts, clap::Error> {
        Cli::try_parse_from(["secrets"].iter().chain(args).copied()).map(|cli| match cli.command {
            Command::Generate(opts) => opts,
        })
    }

    fn output(opts: &GenerateOpts, json: bool) -> String {
        let mut out = Vec::new();
        let global = Global { json, yes: false, env_file: None, database_url: None };
        generate(opts, &global, &mut out).expect("generate");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn byte_count_bounds() {
        assert_eq!(parse(&["generate"]).expect("default").bytes, 32);
        assert_eq!(parse(&["generate", "--bytes", "1024"]).expect("max").bytes, 1024);
        for bad in ["31", "0", "1025", "-1", "lots"] {
            assert!(parse(&["generate", "--bytes", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_line_of_padded_base64() {
        let text = output(&parse(&["generate"]).expect("opts"), false);
        assert!(text.ends_with('\n') && text.lines().count() == 1, "{text:?}");
        let decoded = STANDARD.decode(text.trim_end()).expect("standard base64");
        assert_eq!(decoded.len(), 32);
        assert_eq!(text.trim_end().len(), 44);
        assert_ne!(text, output(&parse(&["generate"]).expect("opts"), false));

        let json: serde_json::Value =
            serde_json::from_str(&output(&parse(&["generate", "--bytes", "48"]).expect("opts"), true)).expect("json");
        assert_eq!(STANDARD.decode(json["secret"].as_str().expect("secret")).expect("base64").len(), 48);
    }
}

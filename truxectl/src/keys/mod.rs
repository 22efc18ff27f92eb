//! `truxectl keys generate`: a new token signing key pair, as PEM files or as env-file lines;
//! `keys list` and `keys rotate` (in [`schedule`]): the signing schedule in the database.

mod schedule;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use truxe_server::keys::{Algorithm, SigningKey, write_file_atomic, write_private_file};

use crate::Global;

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Generate a signing key pair: DIR/jwt-private.pem (0600) and DIR/jwt-public.pem, or env lines with --env
    Generate(GenerateOpts),
    /// Signing keys in the database with their state (next, active, retiring, retired) and dates
    List,
    /// Publish a next signing key now; it signs after JWT_KEY_PUBLISH_DELAY, the old one retires after its tokens expired
    Rotate,
}

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateOpts {
    /// Signing algorithm (JWT_ALGORITHM)
    #[arg(long, value_enum, default_value_t = AlgArg::RS256, ignore_case = true)]
    pub alg: AlgArg,
    /// RSA modulus size for RS256: 2048, 3072 or 4096 [default: 2048]
    #[arg(long, value_parser = parse_bits)]
    pub bits: Option<u32>,
    /// Directory to write jwt-private.pem and jwt-public.pem into (created if missing)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Replace existing key files
    #[arg(long)]
    pub force: bool,
    /// Write no files; print JWT_PRIVATE_KEY="…" and JWT_PUBLIC_KEY="…" lines for an env file
    #[arg(long, conflicts_with_all = ["out", "force"])]
    pub env: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum AlgArg {
    #[value(name = "RS256")]
    RS256,
    #[value(name = "ES256")]
    ES256,
    #[value(name = "EdDSA")]
    EdDSA,
}

impl From<AlgArg> for Algorithm {
    fn from(alg: AlgArg) -> Self {
        match alg {
            AlgArg::RS256 => Algorithm::RS256,
            AlgArg::ES256 => Algorithm::ES256,
            AlgArg::EdDSA => Algorithm::EdDSA,
        }
    }
}

fn parse_bits(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(bits @ (2048 | 3072 | 4096)) => Ok(bits),
        _ => Err("must be 2048, 3072 or 4096".to_string()),
    }
}

pub const PRIVATE_FILE: &str = "jwt-private.pem";
pub const PUBLIC_FILE: &str = "jwt-public.pem";

pub fn run(cmd: Command, global: &Global) -> anyhow::Result<()> {
    match cmd {
        Command::Generate(opts) => generate(&opts, global, &mut std::io::stdout().lock()),
        Command::List => schedule::list(global, &mut std::io::stdout().lock()),
        Command::Rotate => schedule::rotate(global, &mut std::io::stdout().lock()),
    }
}

fn generate(opts: &GenerateOpts, global: &Global, out: &mut dyn Write) -> anyhow::Result<()> {
    let alg = Algorithm::from(opts.alg);
    if opts.bits.is_some() && alg != Algorithm::RS256 {
        eprintln!("truxectl: note: --bits applies to RS256 only; {alg} keys have a fixed size");
    }
    if opts.env {
        let key = SigningKey::generate(alg, opts.bits.unwrap_or(2048))?;
        if global.json {
            let json = serde_json::json!({
                "kid": key.kid(),
                "alg": alg.as_str(),
                "bits": key.bits(),
                "private_key_pem": key.private_pem().secret(),
                "public_key_pem": key.public_pem(),
            });
            writeln!(out, "{json}")?;
        } else {
            out.write_all(env_lines(&key).as_bytes())?;
        }
        return Ok(());
    }

    let private_path = opts.out.join(PRIVATE_FILE);
    let public_path = opts.out.join(PUBLIC_FILE);
    if !opts.force {
        for path in [&private_path, &public_path] {
            if path.symlink_metadata().is_ok() {
                bail!("{} already exists; pass --force to replace it", path.display());
            }
        }
    }
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let key = SigningKey::generate(alg, opts.bits.unwrap_or(2048))?;
    write_private_file(&private_path, key.private_pem().secret().as_bytes(), opts.force)
        .with_context(|| format!("cannot write {}", private_path.display()))?;
    write_file_atomic(&public_path, key.public_pem().as_bytes(), 0o644, opts.force)
        .with_context(|| format!("cannot write {}", public_path.display()))?;

    let private_shown = absolute(&private_path);
    let public_shown = absolute(&public_path);
    if global.json {
        let json = serde_json::json!({
            "kid": key.kid(),
            "alg": alg.as_str(),
            "bits": key.bits(),
            "private_key_path": private_shown,
            "public_key_path": public_shown,
        });
        writeln!(out, "{json}")?;
    } else {
        let size = match alg {
            Algorithm::RS256 => format!("RSA {} bits", key.bits()),
            Algorithm::ES256 => "P-256".to_string(),
            Algorithm::EdDSA => "Ed25519".to_string(),
        };
        writeln!(out, "Generated an {alg} signing key ({size})")?;
        writeln!(out, "  kid:         {}", key.kid())?;
        writeln!(out, "  private key: {} (mode 0600; keep it secret)", private_shown.display())?;
        writeln!(out, "  public key:  {}", public_shown.display())?;
        writeln!(out, "Use it with:")?;
        writeln!(out, "  JWT_PRIVATE_KEY_FILE={}", private_shown.display())?;
        if alg != Algorithm::RS256 {
            writeln!(out, "  JWT_ALGORITHM={alg}")?;
        }
    }
    Ok(())
}

/// The deployment guide's form: one line per key, PEM newlines written as a literal `\n`
/// inside double quotes, which both dotenv parsers and truxe-server's config read back.
fn env_lines(key: &SigningKey) -> String {
    let one_line = |pem: &str| pem.replace('\n', "\\n");
    let mut lines = format!(
        "JWT_PRIVATE_KEY=\"{}\"\nJWT_PUBLIC_KEY=\"{}\"\n",
        one_line(key.private_pem().secret()),
        one_line(&key.public_pem())
    );
    if key.algorithm() != Algorithm::RS256 {
        lines.push_str(&format!("JWT_ALGORITHM={}\n", key.algorithm()));
    }
    lines
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::{CommandFactory, Parser};
    use truxe_server::config::{Config, read_env_file};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> Result<GenerateOpts, clap::Error> {
        let argv = ["keys"].iter().chain(args).copied();
        Cli::try_parse_from(argv).and_then(|cli| match cli.command {
            Command::Generate(opts) => Ok(opts),
            _ => Err(Cli::command().error(clap::error::ErrorKind::InvalidSubcommand, "not generate")),
        })
    }

    fn global(json: bool) -> Global {
        Global { json, yes: false, env_file: None, database_url: None }
    }

    /// A scratch directory removed on drop (truxectl has no tempfile dev-dependency).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let mut suffix = [0u8; 6];
            rand::fill(&mut suffix);
            let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
            let dir = std::env::temp_dir().join(format!("truxectl-{name}-{hex}"));
            std::fs::create_dir_all(&dir).expect("scratch dir");
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn run_to_string(opts: &GenerateOpts, json: bool) -> anyhow::Result<String> {
        let mut out = Vec::new();
        generate(opts, &global(json), &mut out)?;
        Ok(String::from_utf8(out).expect("utf8"))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_argument_errors() {
        let opts = parse(&["generate"]).expect("defaults");
        assert_eq!((opts.alg, opts.bits, opts.out.as_path()), (AlgArg::RS256, None, Path::new(".")));
        assert_eq!(parse(&["generate", "--alg", "EdDSA", "--bits", "4096"]).expect("ok").bits, Some(4096));
        assert_eq!(parse(&["generate", "--alg", "es256"]).expect("any case").alg, AlgArg::ES256);
        for bad in
            [&["generate", "--bits", "1024"][..], &["generate", "--bits", "2049"], &["generate", "--alg", "HS256"]]
        {
            let err = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} should fail"));
            use clap::error::ErrorKind;
            assert!(matches!(err.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue), "{bad:?}: {err}");
        }
        assert!(parse(&["generate", "--env", "--out", "x"]).is_err(), "--env writes no files");
    }

    #[test]
    fn env_lines_round_trip_through_an_env_file_and_the_config() {
        let scratch = Scratch::new("env");
        for alg in [AlgArg::ES256, AlgArg::EdDSA, AlgArg::RS256] {
            let mut opts = parse(&["generate", "--env"]).expect("opts");
            opts.alg = alg;
            let text = run_to_string(&opts, false).expect("generate");
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), if alg == AlgArg::RS256 { 2 } else { 3 }, "{text}");
            assert!(lines[0].starts_with("JWT_PRIVATE_KEY=\"-----BEGIN PRIVATE KEY-----\\n"), "{}", lines[0]);
            assert!(lines[0].ends_with("-----END PRIVATE KEY-----\\n\""), "{}", lines[0]);
            assert!(lines[1].starts_with("JWT_PUBLIC_KEY=\"-----BEGIN PUBLIC KEY-----\\n"), "{}", lines[1]);

            let path = scratch.0.join("truxe.env");
            std::fs::write(&path, &text).expect("write");
            let vars = read_env_file(&path).expect("env file parses");
            let config = Config::from_lookup(&|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"));
            let pem = config.jwt.private_key_pem.as_ref().expect("private key");
            let key = SigningKey::from_pem(pem.secret(), config.jwt.public_key_pem.as_deref(), config.jwt.algorithm)
                .expect("loads");
            assert_eq!(key.algorithm(), Algorithm::from(alg));

            // Literal \n without the quotes' escape processing: the form the guide pastes by hand.
            let literal = |line: &str| {
                let value = line.split_once('=').map(|(_, v)| v.trim_matches('"').to_string());
                value.expect("KEY=VALUE")
            };
            let raw = HashMap::from([
                ("JWT_PRIVATE_KEY".to_string(), literal(lines[0])),
                ("JWT_ALGORITHM".to_string(), Algorithm::from(alg).to_string()),
            ]);
            let config = Config::from_lookup(&|k| raw.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"));
            let pem = config.jwt.private_key_pem.as_ref().expect("private key");
            assert_eq!(SigningKey::from_pem(pem.secret(), None, config.jwt.algorithm).expect("loads").kid(), key.kid());
        }
    }

    #[test]
    fn env_json_carries_both_pems() {
        let opts = parse(&["generate", "--env", "--alg", "EdDSA"]).expect("opts");
        let json: serde_json::Value =
            serde_json::from_str(&run_to_string(&opts, true).expect("generate")).expect("json");
        assert_eq!(json["alg"], "EdDSA");
        let pem = json["private_key_pem"].as_str().expect("pem");
        assert_eq!(
            SigningKey::from_pem(pem, json["public_key_pem"].as_str(), Algorithm::EdDSA).expect("loads").kid(),
            json["kid"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn writes_files_and_refuses_to_overwrite_without_force() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = Scratch::new("files");
        let dir = scratch.0.join("keys");
        let dir_arg = dir.to_str().expect("utf8");
        let opts = parse(&["generate", "--alg", "ES256", "--out", dir_arg]).expect("opts");
        let json: serde_json::Value =
            serde_json::from_str(&run_to_string(&opts, true).expect("generate")).expect("json");
        assert_eq!(json["alg"], "ES256");
        assert_eq!(json["bits"], 256);
        let private_path = PathBuf::from(json["private_key_path"].as_str().expect("path"));
        let public_path = PathBuf::from(json["public_key_path"].as_str().expect("path"));
        assert!(private_path.ends_with(PRIVATE_FILE) && public_path.ends_with(PUBLIC_FILE));
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&private_path), 0o600);
        assert_eq!(mode(&public_path), 0o644);
        let pem = std::fs::read_to_string(&private_path).expect("read");
        let public = std::fs::read_to_string(&public_path).expect("read");
        let key = SigningKey::from_pem(&pem, Some(&public), Algorithm::ES256).expect("loads");
        assert_eq!(key.kid(), json["kid"]);

        let err = run_to_string(&opts, false).expect_err("exists").to_string();
        assert!(err.contains("already exists") && err.contains("--force"), "{err}");
        assert_eq!(std::fs::read_to_string(&private_path).expect("read"), pem, "a refused run changes nothing");

        let forced = parse(&["generate", "--alg", "ES256", "--out", dir_arg, "--force"]).expect("opts");
        let text = run_to_string(&forced, false).expect("forced");
        assert!(text.contains("kid:") && text.contains(PRIVATE_FILE) && text.contains("JWT_ALGORITHM=ES256"), "{text}");
        assert_ne!(std::fs::read_to_string(&private_path).expect("read"), pem);
        assert_eq!(mode(&private_path), 0o600);
    }
}

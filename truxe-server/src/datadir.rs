//! The embedded default's data directory: the generated signing key and admin token live here.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::keyring::SealingKey;
use crate::keys::{self, KeyError, SigningKey};
use crate::secret::Secret;

pub const SIGNING_KEY_FILE: &str = "jwt-private.pem";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
pub const SESSION_SECRET_FILE: &str = "session-secret";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create the data directory {path} (TRUXE_DATA_DIR): {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is empty; delete it to have a new one generated")]
    EmptyToken { path: PathBuf },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("JWT_PRIVATE_KEY is required in production")]
    KeyRequired,
    #[error("ADMIN_TOKEN is required in production")]
    AdminTokenRequired,
    #[error("SESSION_SECRET is required in production")]
    SessionSecretRequired,
}

/// What the server needs from configuration or, in the embedded default, the data directory.
pub struct Credentials {
    /// `JWT_PRIVATE_KEY`, checked against `JWT_PUBLIC_KEY` and `JWT_ALGORITHM`.
    pub env_key: Option<SigningKey>,
    /// Development without `JWT_PRIVATE_KEY`: the data directory's key file, the first key when
    /// the database has none (`keyring::bootstrap` loads or generates it).
    pub data_dir_key: Option<PathBuf>,
    pub admin_token: Secret<String>,
    /// Set only when the token was generated now: it is shown to the operator this once.
    pub admin_token_generated: Option<PathBuf>,
    /// `SESSION_SECRET`, or in development a secret generated into the data directory.
    pub session_secret: Secret<String>,
}

pub fn load_credentials(config: &Config) -> Result<Credentials, DataDirError> {
    let (env_key, data_dir_key) = match &config.jwt.private_key_pem {
        Some(pem) => (
            Some(SigningKey::from_pem(pem.secret(), config.jwt.public_key_pem.as_deref(), config.jwt.algorithm)?),
            None,
        ),
        // Production keys are generated into the database (JWT_KEY_ROTATION), never onto one disk.
        None if config.is_production() && config.jwt.rotation.is_none() => return Err(DataDirError::KeyRequired),
        None if config.is_production() => (None, None),
        None => {
            ensure_dir(&config.data_dir)?;
            (None, Some(config.data_dir.join(SIGNING_KEY_FILE)))
        }
    };
    let (admin_token, admin_token_generated) = match &config.admin_token {
        Some(token) => (token.clone(), None),
        None if config.is_production() => return Err(DataDirError::AdminTokenRequired),
        None => {
            ensure_dir(&config.data_dir)?;
            load_or_generate_admin_token(&config.data_dir.join(ADMIN_TOKEN_FILE))?
        }
    };
    let session_secret = match &config.session.secret {
        Some(secret) => secret.clone(),
        None if config.is_production() => return Err(DataDirError::SessionSecretRequired),
        None => {
            ensure_dir(&config.data_dir)?;
            load_or_generate_secret(&config.data_dir.join(SESSION_SECRET_FILE), generate_session_secret)?.0
        }
    };
    Ok(Credentials { env_key, data_dir_key, admin_token, admin_token_generated, session_secret })
}

/// The key generated signing keys are sealed under, as the server derives it: from
/// `SESSION_SECRET`, else (development) from the data directory's generated session secret,
/// which must exist already: `truxectl` never makes one, since a key sealed under a secret the
/// servers do not have would not open there. `None` when there is neither.
pub fn existing_sealing_key(config: &Config) -> Result<Option<SealingKey>, DataDirError> {
    if let Some(secret) = &config.session.secret {
        return Ok(Some(SealingKey::derive(secret)));
    }
    let path = config.data_dir.join(SESSION_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(contents) if !contents.trim().is_empty() => {
            Ok(Some(SealingKey::derive(&Secret::new(contents.trim().to_string()))))
        }
        Ok(_) => Err(DataDirError::EmptyToken { path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DataDirError::Read { path, source }),
    }
}

/// Creates the data directory readable by its owner only (it holds the private key).
pub fn ensure_dir(path: &Path) -> Result<(), DataDirError> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(|source| DataDirError::Create { path: path.to_path_buf(), source })
}

fn load_or_generate_admin_token(path: &Path) -> Result<(Secret<String>, Option<PathBuf>), DataDirError> {
    load_or_generate_secret(path, generate_admin_token)
}

/// Reads a one-line secret file, or writes a fresh one (mode 0600) when there is none yet.
fn load_or_generate_secret(
    path: &Path,
    generate: fn() -> Secret<String>,
) -> Result<(Secret<String>, Option<PathBuf>), DataDirError> {
    match std::fs::read_to_string(path) {
        Ok(contents) => {
            let token = contents.trim().to_string();
            if token.is_empty() {
                return Err(DataDirError::EmptyToken { path: path.to_path_buf() });
            }
            Ok((Secret::new(token), None))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = generate();
            keys::write_private_file(path, format!("{}\n", token.secret()).as_bytes(), false)
                .map_err(|source| DataDirError::Write { path: path.to_path_buf(), source })?;
            Ok((token, Some(path.to_path_buf())))
        }
        Err(source) => Err(DataDirError::Read { path: path.to_path_buf(), source }),
    }
}

/// 256 random bits; the session key is derived from it (see `http::session`).
fn generate_session_secret() -> Secret<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn generate_admin_token() -> Secret<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    Secret::new(format!("adm_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

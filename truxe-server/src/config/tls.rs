//! TLS to the back ends: the CA files an operator names (`DATABASE_SSL_CA`, `REDIS_TLS_CA`,
//! `SMTP_TLS_CA`) and the system trust store used without one.

use std::fmt;
use std::path::{Path, PathBuf};

use super::source::Reader;

/// A PEM file of one or more CA certificates, read and checked when the configuration loads, so
/// that a wrong path is reported with every other problem instead of at the first connection.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl CaFile {
    /// Reads `path`; the message names the file and says what is wrong with it.
    pub fn read(path: &Path) -> Result<CaFile, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        match openssl::x509::X509::stack_from_pem(&pem) {
            Ok(certs) if !certs.is_empty() => Ok(CaFile { path: path.to_path_buf(), pem }),
            Ok(_) => Err(format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())),
            Err(e) => Err(format!("{} is not a PEM certificate file: {e}", path.display())),
        }
    }
}

/// The CA file variable `name`, checked; `None` when unset or wrong (then an error is recorded).
pub(crate) fn read_ca(r: &mut Reader<'_>, name: &str) -> Option<CaFile> {
    let path = r.string(name)?;
    match CaFile::read(Path::new(&path)) {
        Ok(ca) => Some(ca),
        Err(message) => {
            r.error(name, message);
            None
        }
    }
}

/// The system trust store as OpenSSL finds it: the file `SSL_CERT_FILE` names when it is set,
/// else the distribution's bundle (`/etc/ssl/certs/ca-certificates.crt` on Debian). libpq before
/// version 16 only reads `~/.postgresql/root.crt`, so PostgreSQL is pointed at this file.
pub fn system_ca_file() -> Option<PathBuf> {
    openssl_probe::probe().cert_file
}

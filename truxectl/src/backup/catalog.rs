//! The backup directory: file names, the verification record beside each file, listing and
//! the 30-day rotation.
//!
//! A backup is `truxe_YYYYmmdd_HHMMSS.jsonl.gz` (UTC; `truxe_YYYYmmdd_HHMMSS.N.jsonl.gz` when
//! several are made in one second). `backup verify` records its result beside the file as
//! `FILE.verified.json` ([`Verification`]): whether it passed, when, and the size and SHA-256
//! of the file it checked, so that a later reader (`truxectl doctor`: "a backup newer than a
//! day that was verified") can tell the record belongs to the file as it is now.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::format::{self, Header};

/// The deployment guide's backup directory; the default when it exists.
pub const GUIDE_DIR: &str = "/var/backups/truxe";
/// The default elsewhere (relative to the working directory, as `./truxe-data` is).
pub const LOCAL_DIR: &str = "./backups";
pub const SIDECAR_SUFFIX: &str = ".verified.json";

/// Where backups go (and are listed and pruned) without `--out`/`--dir`.
pub fn default_dir() -> PathBuf {
    if Path::new(GUIDE_DIR).is_dir() { PathBuf::from(GUIDE_DIR) } else { PathBuf::from(LOCAL_DIR) }
}

/// `truxe_YYYYmmdd_HHMMSS` of `at`, plus `.N` for the N-th file of the same second.
pub fn file_name(at: OffsetDateTime, n: u32) -> String {
    let stamp = at
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!("[year][month][day]_[hour][minute][second]"))
        .unwrap_or_default();
    if n <= 1 { format!("truxe_{stamp}.jsonl.gz") } else { format!("truxe_{stamp}.{n}.jsonl.gz") }
}

/// The instant in a backup's name (`truxe_YYYYmmdd_HHMMSS.….gz`, the guide's `.sql.gz` files
/// included); `None` for any other file.
pub fn parse_name(name: &str) -> Option<OffsetDateTime> {
    let rest = name.strip_prefix("truxe_")?;
    let (stamp, tail) = rest.split_at_checked(15)?;
    if !tail.starts_with('.') || !tail.ends_with(".gz") {
        return None;
    }
    let format = format_description!("[year][month][day]_[hour][minute][second]");
    time::PrimitiveDateTime::parse(stamp, format).ok().map(|t| t.assume_utc())
}

pub fn sidecar_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).replace_nanosecond(0).unwrap_or(at).format(&Rfc3339).unwrap_or_default()
}

/// What `backup verify` found, stored as `FILE.verified.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Verification {
    /// The backup's file name (not its path: the pair may be moved together).
    pub file: String,
    pub file_bytes: u64,
    pub file_sha256: String,
    pub ok: bool,
    /// RFC 3339, UTC.
    pub verified_at: String,
    /// Why it failed (`None` when `ok`).
    pub error: Option<String>,
    /// The backend of the scratch database it was restored into.
    pub scratch: Option<String>,
    pub schema_version: Option<String>,
    pub backend: Option<String>,
    pub created_at: Option<String>,
    /// Rows per table found after the restore (in the backup's table order).
    pub tables: Vec<TableRows>,
    pub verified_by: String,
}

impl Verification {
    /// Whether the record was made of `file` as it is now (same size and SHA-256): for readers
    /// such as `truxectl doctor` that must not trust a record of a file replaced since.
    pub fn matches(&self, file: &Path) -> bool {
        std::fs::metadata(file).is_ok_and(|m| m.len() == self.file_bytes)
            && file_sha256(file).is_ok_and(|sha| sha == self.file_sha256)
    }
}

pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let n = std::io::Read::read(&mut file, &mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format::hex(&hasher.finalize()))
}

pub fn read_verification(file: &Path) -> Option<Verification> {
    let text = std::fs::read(sidecar_path(file)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes `FILE.verified.json` (mode 0600, through a temporary file and a rename).
pub fn write_verification(file: &Path, record: &Verification) -> anyhow::Result<()> {
    let path = sidecar_path(file);
    let mut text = serde_json::to_vec_pretty(record)?;
    text.push(b'\n');
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".truxe-verify")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write the verification record in {}", dir.display()))?;
    std::io::Write::write_all(&mut temp, &text)?;
    temp.as_file().sync_all()?;
    temp.persist(&path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TableRows {
    pub name: String,
    pub rows: u64,
}

/// One backup file in a directory.
#[derive(Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub name: String,
    /// From the name.
    pub named_at: OffsetDateTime,
    pub bytes: u64,
    /// The header, or why it could not be read (a foreign or damaged file).
    pub header: Result<Header, String>,
    pub verification: Option<Verification>,
}

impl Entry {
    /// Verified, and the record is of this file (same size; `doctor` may also compare the hash).
    pub fn verified_ok(&self) -> bool {
        self.verification.as_ref().is_some_and(|v| v.ok && v.file_bytes == self.bytes)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let header = self.header.as_ref().ok();
        serde_json::json!({
            "path": self.path.display().to_string(),
            "name": self.name,
            "created_at": header.map(|h| h.created_at.clone()).unwrap_or_else(|| rfc3339(self.named_at)),
            "bytes": self.bytes,
            "backend": header.map(|h| h.backend.clone()),
            "schema_version": header.map(|h| h.schema_version.clone()),
            "rows": header.map(|h| h.total_rows()),
            "readable": self.header.is_ok(),
            "error": self.header.as_ref().err(),
            "verified": self.verification.as_ref().map(|v| serde_json::json!({
                "ok": v.ok && v.file_bytes == self.bytes,
                "verified_at": v.verified_at,
                "error": v.error,
                "scratch": v.scratch,
            })),
        })
    }
}

/// The backups in `dir`, newest first (by the instant in their names).
pub fn list(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let reading = || format!("cannot read the backup directory {}", dir.display());
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir).with_context(reading)? {
        let item = item.with_context(reading)?;
        let name = item.file_name().to_string_lossy().into_owned();
        let Some(named_at) = parse_name(&name) else { continue };
        let Ok(meta) = item.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let path = item.path();
        let header = format::read_header(&path).map_err(|e| e.to_string());
        let verification = read_verification(&path);
        entries.push(Entry { path, name, named_at, bytes: meta.len(), header, verification });
    }
    entries.sort_by(|a, b| b.named_at.cmp(&a.named_at).then_with(|| b.name.cmp(&a.name)));
    Ok(entries)
}

/// What [`prune`] did (or would do).
#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    pub deleted: Vec<String>,
    pub kept: Vec<String>,
}

/// Deletes the backups named more than `keep_days` days before `now`, with their verification
/// records, and leftovers of interrupted runs (`.truxe_*.partial`) older than a day. The newest
/// backup is always kept, so that a rotation that runs after backups stopped working never
/// leaves the directory empty.
pub fn prune(dir: &Path, keep_days: u32, now: OffsetDateTime, dry_run: bool) -> anyhow::Result<Pruned> {
    let cutoff = now - time::Duration::days(i64::from(keep_days));
    let mut pruned = Pruned::default();
    for (i, entry) in list(dir)?.into_iter().enumerate() {
        if i == 0 || entry.named_at >= cutoff {
            pruned.kept.push(entry.path.display().to_string());
            continue;
        }
        if !dry_run {
            std::fs::remove_file(&entry.path).with_context(|| format!("cannot delete {}", entry.path.display()))?;
            let sidecar = sidecar_path(&entry.path);
            match std::fs::remove_file(&sidecar) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot delete {}", sidecar.display())),
            }
        }
        pruned.deleted.push(entry.path.display().to_string());
    }
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    for item in std::fs::read_dir(dir)?.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(".truxe_") && name.ends_with(".partial")) {
            continue;
        }
        let old = item.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < day_ago);
        if old {
            if !dry_run {
                let _ = std::fs::remove_file(item.path());
            }
            pruned.deleted.push(item.path().display().to_string());
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn names_carry_the_utc_instant() {
        let at = datetime!(2026-12-04 02:00:07 UTC);
        assert_eq!(file_name(at, 1), "truxe_20261204_020007.jsonl.gz");
        assert_eq!(file_name(at, 3), "truxe_20261204_020007.3.jsonl.gz");
        assert_eq!(parse_name("truxe_20261204_020007.jsonl.gz"), Some(at));
        assert_eq!(parse_name("truxe_20261204_020007.3.jsonl.gz"), Some(at));
        assert_eq!(parse_name("truxe_20261106_020000.sql.gz"), Some(datetime!(2026-11-06 02:00:00 UTC)));
        for other in [
            "truxe_20261204_020007.jsonl.gz.verified.json",
            ".truxe_20261204_020007.jsonl.gz.partial",
            "truxe_2026120_020007.jsonl.gz",
            "truxe_20261304_020007.jsonl.gz",
            "truxe_20261204_020007jsonl.gz",
            "backup.gz",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn prune_keeps_recent_files_and_the_newest() {
        let dir = tempfile::tempdir().expect("dir");
        let now = datetime!(2026-12-04 02:00:00 UTC);
        let touch = |name: &str| std::fs::write(dir.path().join(name), b"x").expect("write");
        touch("truxe_20261203_020000.jsonl.gz");
        touch("truxe_20261105_020000.jsonl.gz");
        touch("truxe_20261103_020000.jsonl.gz");
        touch("truxe_20261103_020000.jsonl.gz.verified.json");
        touch("truxe_20251001_020000.sql.gz");
        touch("unrelated.gz");
        let pruned = prune(dir.path(), 30, now, true).expect("dry run");
        assert_eq!(pruned.deleted.len(), 2, "{pruned:?}");
        assert!(dir.path().join("truxe_20261103_020000.jsonl.gz").exists(), "a dry run deletes nothing");
        let pruned = prune(dir.path(), 30, now, false).expect("prune");
        assert_eq!(pruned.kept.len(), 2, "{pruned:?}");
        let left: std::collections::BTreeSet<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        let expected: std::collections::BTreeSet<String> =
            ["truxe_20261203_020000.jsonl.gz", "truxe_20261105_020000.jsonl.gz", "unrelated.gz"]
                .map(String::from)
                .into();
        assert_eq!(left, expected);

        // All old: the newest stays.
        let pruned = prune(dir.path(), 0, now + time::Duration::days(400), false).expect("prune");
        assert_eq!(pruned.kept, vec![dir.path().join("truxe_20261203_020000.jsonl.gz").display().to_string()]);
    }
}

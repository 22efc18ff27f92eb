//! The backup file: one self-describing format for both backends.
//!
//! A file is gzip (two members, which `zcat` reads as one stream) of:
//!
//! ```text
//! {"format":"truxe-backup","format_version":1,"schema_version":"20261203000002",…}   the header
//! {"table":"oauth_clients"}                                                          payload:
//! ["client-id","Name",null,…]                                                        one line a row
//! {"table":"oauth_client_redirect_uris"}
//! …
//! ```
//!
//! The header names the schema version, the backend it was taken on, when, every table with
//! its columns and row count, and the SHA-256 and length of the payload (everything after the
//! header line). It is written last but stored first (the payload is compressed into a side
//! file, then appended), so that `backup list` reads a file's first line only, and a reader
//! checks everything before it trusts a single row. Rows are JSON arrays in the header's column
//! order; booleans are `true`/`false` on both backends, so a file restores into either.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `format` of every Truxe backup header.
pub const FORMAT: &str = "truxe-backup";
/// The layout this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Longer lines are not ours: a foreign file must not make the reader buffer gigabytes.
const MAX_LINE_BYTES: u64 = 64 << 20;
/// A header names a few dozen tables and columns: kilobytes.
const MAX_HEADER_BYTES: u64 = 4 << 20;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Header {
    pub format: String,
    pub format_version: u32,
    /// The latest migration applied to the database (diesel's version, digits only).
    pub schema_version: String,
    /// Every migration applied, oldest first.
    pub migrations: Vec<String>,
    /// `postgresql` or `sqlite`.
    pub backend: String,
    /// RFC 3339, UTC: the instant of the snapshot.
    pub created_at: String,
    /// `truxectl 0.1.0`.
    pub created_by: String,
    /// In payload order: parents before the tables that reference them.
    pub tables: Vec<Table>,
    pub payload_bytes: u64,
    /// Lower-case hex.
    pub payload_sha256: String,
}

impl Header {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Table {
    pub name: String,
    pub rows: u64,
    pub columns: Vec<Column>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

/// The portable column types of Truxe's schema (see migrations/): what a value is cast to on
/// restore, whichever backend wrote it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Text,
    Integer,
    Boolean,
    Real,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("not a Truxe backup: {0}")]
    Foreign(String),
    #[error(
        "written in backup format {0}, newer than this truxectl reads ({FORMAT_VERSION}); use the truxectl that made it"
    )]
    NewerFormat(u32),
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("corrupt: {0}")]
    Corrupt(String),
}

/// What a reader found wrong, or what the consumer of its rows failed with.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Sink(E),
}

/// gzip's own errors in our words: an early end is truncation, anything else corruption.
fn gzip_error(error: std::io::Error, at: &str) -> FormatError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        FormatError::Truncated(format!("the compressed data ends early ({at})"))
    } else {
        FormatError::Corrupt(format!("{at}: {error}"))
    }
}

fn open(path: &Path) -> Result<BufReader<MultiGzDecoder<BufReader<File>>>, FormatError> {
    let opening = |source| FormatError::Open { path: path.display().to_string(), source };
    let mut file = BufReader::new(File::open(path).map_err(opening)?);
    let magic = file.fill_buf().map_err(opening)?;
    if magic.is_empty() {
        return Err(FormatError::Foreign("the file is empty".into()));
    }
    if !magic.starts_with(&[0x1f, 0x8b]) {
        return Err(FormatError::Foreign("not gzip-compressed".into()));
    }
    Ok(BufReader::with_capacity(256 << 10, MultiGzDecoder::new(file)))
}

/// Reads one line (without its `\n`) into `line`; `false` at the end of the stream.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, at: &str) -> Result<bool, FormatError> {
    read_line_at_most(reader, line, at, MAX_LINE_BYTES)
}

fn read_line_at_most(reader: &mut impl BufRead, line: &mut Vec<u8>, at: &str, max: u64) -> Result<bool, FormatError> {
    line.clear();
    let n = reader.by_ref().take(max).read_until(b'\n', line).map_err(|e| gzip_error(e, at))?;
    if n == 0 {
        return Ok(false);
    }
    if line.last() != Some(&b'\n') {
        return Err(if n as u64 >= max && max == MAX_HEADER_BYTES {
            FormatError::Foreign(format!("{at}: a line longer than {max} bytes"))
        } else if n as u64 >= max {
            FormatError::Corrupt(format!("{at}: a line longer than {max} bytes"))
        } else {
            FormatError::Truncated(format!("{at}: the last line is cut off"))
        });
    }
    line.pop();
    Ok(true)
}

fn parse_header(line: &[u8]) -> Result<Header, FormatError> {
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|_| FormatError::Foreign("its first line is not a Truxe backup header".into()))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(FormatError::Foreign(format!("its first line does not say \"format\":\"{FORMAT}\"")));
    }
    match value.get("format_version").and_then(|v| v.as_u64()) {
        Some(v) if v > u64::from(FORMAT_VERSION) => return Err(FormatError::NewerFormat(v as u32)),
        Some(_) => {}
        None => return Err(FormatError::Corrupt("the header has no format_version".into())),
    }
    let header: Header =
        serde_json::from_value(value).map_err(|e| FormatError::Corrupt(format!("the header is malformed: {e}")))?;
    if header.payload_sha256.len() != 64 || !header.payload_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FormatError::Corrupt("the header's payload_sha256 is not a SHA-256".into()));
    }
    Ok(header)
}

/// The header alone (for `backup list`): checks that the file is ours, not its rows.
pub fn read_header(path: &Path) -> Result<Header, FormatError> {
    let mut reader = open(path)?;
    let mut line = Vec::new();
    if !read_line_at_most(&mut reader, &mut line, "the header", MAX_HEADER_BYTES)? {
        return Err(FormatError::Truncated("no header".into()));
    }
    parse_header(&line)
}

/// One batch of rows of one table, as a JSON array of row arrays (`[[…],[…]]`): the form both
/// backends' restore statements take as a single bound parameter.
pub struct Batch<'a> {
    pub table: &'a Table,
    pub json: &'a str,
    pub rows: usize,
}

/// Reads a whole file, handing its rows to `sink` in batches of at most `batch_rows`, and fails
/// unless the payload is exactly what the header promises: every table in order, each row with
/// as many values as the table has columns, the row counts, the length and the SHA-256. The
/// checksum is known only at the end, so a consumer that writes must not commit before this
/// returns `Ok`.
pub fn read<E>(
    path: &Path,
    batch_rows: usize,
    mut sink: impl FnMut(Batch<'_>) -> Result<(), E>,
) -> Result<Header, ReadError<E>> {
    let mut reader = open(path)?;
    let mut line = Vec::new();
    if !read_line_at_most(&mut reader, &mut line, "the header", MAX_HEADER_BYTES)? {
        return Err(FormatError::Truncated("no header".into()).into());
    }
    let header = parse_header(&line)?;
    let mut hasher = Sha256::new();
    let mut bytes: u64 = 0;
    let mut current: Option<usize> = None;
    let mut rows_in_table: u64 = 0;
    let mut batch = String::new();
    let mut batched = 0usize;

    let flush =
        |table: &Table, batch: &mut String, batched: &mut usize, sink: &mut dyn FnMut(Batch<'_>) -> Result<(), E>| {
            if *batched == 0 {
                return Ok(());
            }
            batch.push(']');
            let result = sink(Batch { table, json: batch, rows: *batched });
            batch.clear();
            *batched = 0;
            result.map_err(ReadError::Sink)
        };
    let close_table = |index: usize, rows: u64| -> Result<(), FormatError> {
        let expected = header.tables[index].rows;
        if rows != expected {
            return Err(FormatError::Corrupt(format!(
                "table {} has {rows} rows, the header says {expected}",
                header.tables[index].name
            )));
        }
        Ok(())
    };

    loop {
        let at = match current {
            Some(i) => format!("table {}, row {}", header.tables[i].name, rows_in_table + 1),
            None => "the first table".to_string(),
        };
        if !read_line(&mut reader, &mut line, &at)? {
            break;
        }
        hasher.update(&line);
        hasher.update(b"\n");
        bytes += line.len() as u64 + 1;
        match line.first() {
            Some(b'{') => {
                #[derive(Deserialize)]
                struct Marker {
                    table: String,
                }
                let marker: Marker = serde_json::from_slice(&line)
                    .map_err(|e| FormatError::Corrupt(format!("{at}: not a table marker: {e}")))?;
                if let Some(i) = current {
                    flush(&header.tables[i], &mut batch, &mut batched, &mut sink)?;
                    close_table(i, rows_in_table)?;
                }
                let next = current.map_or(0, |i| i + 1);
                match header.tables.get(next) {
                    Some(table) if table.name == marker.table => {}
                    Some(table) => {
                        return Err(FormatError::Corrupt(format!(
                            "table {} where the header has {} next",
                            marker.table, table.name
                        ))
                        .into());
                    }
                    None => {
                        return Err(FormatError::Corrupt(format!("table {} is not in the header", marker.table)).into());
                    }
                }
                current = Some(next);
                rows_in_table = 0;
            }
            Some(b'[') => {
                let Some(i) = current else {
                    return Err(FormatError::Corrupt("a row before the first table marker".into()).into());
                };
                let table = &header.tables[i];
                let values: Vec<serde::de::IgnoredAny> =
                    serde_json::from_slice(&line).map_err(|e| FormatError::Corrupt(format!("{at}: {e}")))?;
                if values.len() != table.columns.len() {
                    return Err(FormatError::Corrupt(format!(
                        "{at}: {} values for {} columns",
                        values.len(),
                        table.columns.len()
                    ))
                    .into());
                }
                // The line was just parsed as JSON, so it is UTF-8.
                let text = std::str::from_utf8(&line).map_err(|e| FormatError::Corrupt(format!("{at}: {e}")))?;
                batch.push(if batched == 0 { '[' } else { ',' });
                batch.push_str(text);
                batched += 1;
                rows_in_table += 1;
                if batched >= batch_rows {
                    flush(table, &mut batch, &mut batched, &mut sink)?;
                }
            }
            _ => return Err(FormatError::Corrupt(format!("{at}: neither a row nor a table marker")).into()),
        }
    }
    match current {
        Some(i) => {
            flush(&header.tables[i], &mut batch, &mut batched, &mut sink)?;
            close_table(i, rows_in_table)?;
            if i + 1 < header.tables.len() {
                return Err(FormatError::Truncated(format!(
                    "the file ends before table {}",
                    header.tables[i + 1].name
                ))
                .into());
            }
        }
        None if !header.tables.is_empty() => {
            return Err(FormatError::Truncated("the file ends after its header".into()).into());
        }
        None => {}
    }
    if bytes != header.payload_bytes {
        return Err(FormatError::Corrupt(format!(
            "the payload has {bytes} bytes, the header says {}",
            header.payload_bytes
        ))
        .into());
    }
    if hex(&hasher.finalize()) != header.payload_sha256.to_ascii_lowercase() {
        return Err(FormatError::Corrupt("the payload's SHA-256 does not match the header".into()).into());
    }
    Ok(header)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Writes the payload (compressed) into `out` while hashing it; the header is made from what
/// was written ([`PayloadWriter::finish`]).
pub struct PayloadWriter<W: Write> {
    out: flate2::write::GzEncoder<W>,
    hasher: Sha256,
    bytes: u64,
    tables: Vec<Table>,
    line: Vec<u8>,
}

impl<W: Write> PayloadWriter<W> {
    pub fn new(out: W) -> Self {
        PayloadWriter {
            out: flate2::write::GzEncoder::new(out, flate2::Compression::new(COMPRESSION)),
            hasher: Sha256::new(),
            bytes: 0,
            tables: Vec::new(),
            line: Vec::with_capacity(1024),
        }
    }

    fn write_line(&mut self) -> std::io::Result<()> {
        self.line.push(b'\n');
        self.hasher.update(&self.line);
        self.bytes += self.line.len() as u64;
        self.out.write_all(&self.line)?;
        self.line.clear();
        Ok(())
    }

    pub fn begin_table(&mut self, name: &str, columns: Vec<Column>) -> std::io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, &serde_json::json!({ "table": name }))?;
        self.write_line()?;
        self.tables.push(Table { name: name.to_string(), rows: 0, columns });
        Ok(())
    }

    /// One row, as the values in the current table's column order.
    pub fn row(&mut self, values: &[serde_json::Value]) -> std::io::Result<()> {
        let Some(table) = self.tables.last_mut() else {
            return Err(std::io::Error::other("a row before the first table"));
        };
        if values.len() != table.columns.len() {
            return Err(std::io::Error::other(format!(
                "table {}: {} values for {} columns",
                table.name,
                values.len(),
                table.columns.len()
            )));
        }
        table.rows += 1;
        self.line.clear();
        serde_json::to_writer(&mut self.line, values)?;
        self.write_line()
    }

    pub fn rows_in_current_table(&self) -> u64 {
        self.tables.last().map_or(0, |t| t.rows)
    }

    /// Ends the compressed stream; returns the sink and what the header must say about it.
    pub fn finish(self) -> std::io::Result<(W, Vec<Table>, u64, String)> {
        let out = self.out.finish()?;
        Ok((out, self.tables, self.bytes, hex(&self.hasher.finalize())))
    }
}

/// gzip level: 6 (gzip's default) costs about twice level 1's time for a file a third smaller.
const COMPRESSION: u32 = 6;

/// The header line as its own gzip member (the file's first).
pub fn write_header(out: &mut impl Write, header: &Header) -> std::io::Result<()> {
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::new(COMPRESSION));
    serde_json::to_writer(&mut gz, header)?;
    gz.write_all(b"\n")?;
    gz.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests;

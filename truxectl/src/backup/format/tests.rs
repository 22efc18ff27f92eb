use std::io::Write;

use super::*;

fn columns(names: &[(&str, Kind)]) -> Vec<Column> {
    names.iter().map(|(n, k)| Column { name: (*n).to_string(), kind: *k }).collect()
}

/// A two-table backup file; returns its bytes.
fn sample() -> Vec<u8> {
    let mut writer = PayloadWriter::new(Vec::new());
    writer.begin_table("clients", columns(&[("id", Kind::Text), ("trusted", Kind::Boolean)])).expect("table");
    for i in 0..5 {
        writer.row(&[serde_json::json!(format!("c{i}")), serde_json::json!(i % 2 == 0)]).expect("row");
    }
    writer.begin_table("empty", columns(&[("id", Kind::Text)])).expect("table");
    writer
        .begin_table("tokens", columns(&[("jti", Kind::Text), ("n", Kind::Integer), ("x", Kind::Real)]))
        .expect("table");
    for i in 0..7 {
        writer
            .row(&[serde_json::json!(format!("t{i}\n\"quoted\"")), serde_json::json!(i), serde_json::Value::Null])
            .expect("row");
    }
    assert!(writer.row(&[serde_json::json!("too few")]).is_err(), "a row must fit its table");
    let (payload, tables, payload_bytes, payload_sha256) = writer.finish().expect("finish");
    let header = Header {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        schema_version: "20261203000002".into(),
        migrations: vec!["20261128000001".into(), "20261203000002".into()],
        backend: "sqlite".into(),
        created_at: "2026-12-04T02:00:00Z".into(),
        created_by: "test".into(),
        tables,
        payload_bytes,
        payload_sha256,
    };
    let mut file = Vec::new();
    write_header(&mut file, &header).expect("header");
    file.extend_from_slice(&payload);
    file
}

/// What a reader handed out: table, rows, the batch's JSON.
type Batches = Vec<(String, usize, String)>;

fn read_bytes(bytes: &[u8]) -> Result<(Header, Batches), FormatError> {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("b.gz");
    std::fs::write(&path, bytes).expect("write");
    let mut batches = Vec::new();
    let header = read(&path, 3, |b| {
        batches.push((b.table.name.clone(), b.rows, b.json.to_string()));
        Ok::<(), std::convert::Infallible>(())
    })
    .map_err(|e| match e {
        ReadError::Format(e) => e,
        ReadError::Sink(never) => match never {},
    })?;
    Ok((header, batches))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

#[test]
fn a_file_reads_back_in_batches_with_its_header() {
    let (header, batches) = read_bytes(&sample()).expect("reads");
    assert_eq!(
        header.tables.iter().map(|t| (t.name.as_str(), t.rows)).collect::<Vec<_>>(),
        [("clients", 5), ("empty", 0), ("tokens", 7)]
    );
    assert_eq!(header.total_rows(), 12);
    let sizes: Vec<(&str, usize)> = batches.iter().map(|(t, n, _)| (t.as_str(), *n)).collect();
    assert_eq!(sizes, [("clients", 3), ("clients", 2), ("tokens", 3), ("tokens", 3), ("tokens", 1)]);
    let first: Vec<Vec<serde_json::Value>> = serde_json::from_str(&batches[0].2).expect("a JSON array of rows");
    assert_eq!(first[1], [serde_json::json!("c1"), serde_json::json!(false)]);
    let tokens: Vec<Vec<serde_json::Value>> = serde_json::from_str(&batches[2].2).expect("rows");
    assert_eq!(tokens[0][0], "t0\n\"quoted\"", "newlines and quotes survive in values");

    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("b.gz");
    std::fs::write(&path, sample()).expect("write");
    assert_eq!(read_header(&path).expect("header"), header);
}

#[test]
fn every_flipped_byte_is_refused_unless_it_changes_nothing() {
    let good = sample();
    let content = decompress(&good);
    let mut unnoticed = Vec::new();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        if read_bytes(&bad).is_ok() {
            // gzip does not check its headers' mtime and OS bytes, nor the unused bits of a
            // member's last byte: such a flip is accepted only when the content is intact.
            assert_eq!(decompress(&bad), content, "byte {i} flipped changed the content but was accepted");
            unnoticed.push(i);
        }
    }
    assert!(unnoticed.len() < 20, "{unnoticed:?}");
}

fn decompress(file: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(file), &mut out).expect("decompress");
    out
}

/// The length of the second gzip member (the payload) of `file`.
fn payload_len(file: &[u8]) -> usize {
    let mut decoder = flate2::bufread::GzDecoder::new(file);
    let mut header = Vec::new();
    std::io::Read::read_to_end(&mut decoder, &mut header).expect("first member");
    let rest = decoder.into_inner();
    rest.len()
}

#[test]
fn every_truncation_is_refused() {
    let good = sample();
    for len in 0..good.len() {
        let error = read_bytes(&good[..len]).expect_err("truncated");
        assert!(
            matches!(error, FormatError::Truncated(_) | FormatError::Corrupt(_) | FormatError::Foreign(_)),
            "{len}: {error}"
        );
    }
}

#[test]
fn foreign_files_are_named_as_such() {
    let foreign = |bytes: &[u8]| match read_bytes(bytes) {
        Err(FormatError::Foreign(why)) => why,
        other => panic!("not refused as foreign: {:?}", other.map(|(h, _)| h)),
    };
    assert!(foreign(b"").contains("empty"));
    assert!(foreign(b"PGDMP\x01\x0e").contains("gzip"));
    assert!(foreign(&gzip(b"-- PostgreSQL database dump\nCREATE TABLE x ();\n")).contains("header"));
    assert!(foreign(&gzip(b"{\"format\":\"something-else\"}\n")).contains("truxe-backup"));
    let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    foreign(&gzip(&random));
}

#[test]
fn a_newer_format_or_a_lying_header_is_refused() {
    let good = sample();
    let (header, _) = read_bytes(&good).expect("reads");
    let payload = &good[good.len() - payload_len(&good)..];
    let with_header = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut value = serde_json::to_value(&header).expect("json");
        edit(&mut value);
        let mut file = gzip(format!("{value}\n").as_bytes());
        file.extend_from_slice(payload);
        read_bytes(&file)
    };
    assert!(matches!(with_header(&|v| v["format_version"] = 2.into()), Err(FormatError::NewerFormat(2))));
    let counted = with_header(&|v| v["tables"][0]["rows"] = 4.into());
    assert!(
        matches!(&counted, Err(FormatError::Corrupt(why)) if why.contains("clients") && why.contains("4")),
        "{:?}",
        counted.err()
    );
    let hashed = with_header(&|v| v["payload_sha256"] = "0".repeat(64).into());
    assert!(matches!(&hashed, Err(FormatError::Corrupt(why)) if why.contains("SHA-256")), "{:?}", hashed.err());
    let missing = with_header(&|v| {
        v["tables"]
            .as_array_mut()
            .expect("tables")
            .push(serde_json::json!({ "name": "more", "rows": 0, "columns": [] }))
    });
    assert!(matches!(missing, Err(FormatError::Truncated(_))), "{:?}", missing.err());
    assert!(with_header(&|_| {}).is_ok(), "the unedited header still reads");
}

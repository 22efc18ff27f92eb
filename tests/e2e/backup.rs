//! `truxectl backup`: create, verify and restore round trips on both backends (and across
//! them), a backup taken while the server issues tokens, damaged, foreign and newer-schema
//! files refused with the target untouched, restore refused under a running server, and the
//! rotation.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::on_both_backends;
use crate::support::flow::{Agent, create_user, flow_server, sign_in_tokens, web_app};
use crate::support::oauth::{machine_client, revoke, token_for};
use crate::support::process::{ServerProcess, text, truxectl};
use crate::support::{Backend, TestDb, TestServer, free_port, test_key_pem};

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "truxectl failed:\n{}", text(output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(output)))
}

/// `truxectl backup ARGS --database-url URL` in `cwd`.
fn backup(cwd: &Path, url: &str, args: &[&str]) -> Output {
    truxectl(cwd, &[], &[&["backup"][..], args, &["--database-url", url]].concat())
}

/// `backup create --out DIR --json` of `url`: the file and what it said.
fn create(cwd: &Path, url: &str, out: &Path) -> (PathBuf, Value) {
    let answer = json(&backup(cwd, url, &["create", "--out", out.to_str().expect("utf8"), "--json"]));
    (PathBuf::from(answer["path"].as_str().expect("path")), answer)
}

fn decompress(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).expect("open")).read_to_end(&mut out).expect("gunzip");
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).expect("gzip");
    gz.finish().expect("gzip")
}

/// The header line and the payload (every row of every table, in key order).
fn split(path: &Path) -> (Value, Vec<u8>) {
    let all = decompress(path);
    let end = all.iter().position(|b| *b == b'\n').expect("a header line");
    (serde_json::from_slice(&all[..end]).expect("header JSON"), all[end + 1..].to_vec())
}

/// Everything in the database at `url`, as a backup's payload (rows sorted by primary key).
fn contents(cwd: &Path, url: &str) -> Vec<u8> {
    let out = tempfile::tempdir().expect("dir");
    let (path, _) = create(cwd, url, out.path());
    split(&path).1
}

fn counts(answer: &Value) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = answer["tables"]
        .as_object()
        .expect("tables")
        .iter()
        .map(|(name, n)| (name.clone(), n.as_u64().expect("count")))
        .collect();
    counts.sort();
    counts
}

fn header_counts(header: &Value) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = header["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| (t["name"].as_str().expect("name").to_string(), t["rows"].as_u64().expect("rows")))
        .collect();
    counts.sort();
    counts
}

fn rows(answer: &Value, table: &str) -> u64 {
    answer["tables"][table].as_u64().unwrap_or_else(|| panic!("no {table} in {answer}"))
}

/// A server whose database holds a bit of everything: clients with redirect URIs, users,
/// sessions, consents, grants, codes, refresh tokens, a revoked access token, audit events.
async fn populated(backend: Backend) -> TestServer {
    let server = flow_server(backend, &[]).await;
    let app = web_app(&server).await;
    for i in 0..3 {
        let user = create_user(&server, &format!("ada{i}@example.com"));
        let (agent, _) = Agent::signed_in(&server, &user);
        sign_in_tokens(&server, &agent, &app, "openid email offline_access").await;
    }
    let machine = machine_client(&server, "client_secret_basic").await;
    let token = token_for(&server, &machine, &[]).await;
    revoke(&server, &machine, &token, None).await;
    server.state.audit.flush().await;
    server
}

fn other(backend: Backend) -> Backend {
    match backend {
        Backend::Sqlite => Backend::Postgres,
        Backend::Postgres => Backend::Sqlite,
    }
}

/// A backend's empty database to restore into (PostgreSQL's created, SQLite's not even that).
fn target(backend: Backend) -> TestDb {
    TestDb::new(backend)
}

on_both_backends! {
    async fn create_verify_restore_round_trip(backend: Backend) {
        let mut server = populated(backend).await;
        let cwd = server.db.dir.path().to_path_buf();
        let out = tempfile::tempdir().expect("out");
        let (file, created) = create(&cwd, &server.db.url, out.path());
        server.stop().await;

        assert_eq!(created["backend"], backend_name(backend));
        let name = file.file_name().expect("name").to_string_lossy().into_owned();
        assert!(name.starts_with("truxe_") && name.ends_with(".jsonl.gz"), "{name}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).expect("file").permissions().mode() & 0o777, 0o600, "it holds secrets");
        let leftovers: Vec<_> = std::fs::read_dir(out.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no work files left: {leftovers:?}");
        for table in ["oauth_clients", "oauth_client_redirect_uris", "users", "sessions", "oauth_consents", "oauth_grants", "oauth_authorization_codes", "oauth_tokens", "signing_keys", "audit_events", "server_secrets"] {
            assert!(rows(&created, table) > 0, "{table} has rows to back up: {created}");
        }
        let (header, payload) = split(&file);
        assert_eq!(header["format"], "truxe-backup");
        assert_eq!(header["schema_version"], created["schema_version"]);
        assert_eq!(header_counts(&header), counts(&created));

        // Verify: restored into a scratch database, recorded beside the file.
        let verified = json(&truxectl(&cwd, &[], &["backup", "verify", file.to_str().expect("utf8"), "--json", "--database-url", &server.db.url]));
        assert_eq!(verified["ok"], true, "{verified}");
        assert_eq!(verified["scratch"], backend_name(backend), "a backup verifies on its own backend: {verified}");
        let record: Value = serde_json::from_slice(&std::fs::read(format!("{}.verified.json", file.display())).expect("record")).expect("json");
        assert_eq!(record["ok"], true);
        assert_eq!(record["file_bytes"], std::fs::metadata(&file).expect("file").len());
        let listed = json(&truxectl(&cwd, &[], &["backup", "list", "--dir", out.path().to_str().expect("utf8"), "--json"]));
        assert_eq!(listed["backups"][0]["name"], name.as_str(), "{listed}");
        assert_eq!(listed["backups"][0]["verified"]["ok"], true, "{listed}");
        assert_eq!(listed["backups"][0]["rows"], header_counts(&header).iter().map(|(_, n)| n).sum::<u64>());

        // Restore into a fresh database of the same backend, then of the other one: the same
        // rows, byte for byte.
        for into in [backend, other(backend)] {
            let db = target(into);
            let restored = json(&backup(&cwd, &db.url, &["restore", file.to_str().expect("utf8"), "--yes", "--json"]));
            assert_eq!(counts(&restored), counts(&created), "{into:?}: {restored}");
            assert_eq!(restored["from_backend"], backend_name(backend));
            assert!(contents(&cwd, &db.url) == payload, "{backend:?} → {into:?}: the restored rows differ");
            // The server starts on it (migrated, its keys and secrets in place).
            let mut again = TestServer::start_with_db(db, &[]).await;
            let (status, _) = again.get_json("/oauth-provider/jwks").await;
            assert_eq!(status, 200);
            again.stop().await;
        }

        // `create --verify` does both, and restoring over a database that has data replaces it.
        let db = target(backend);
        db.migrate();
        json(&truxectl(&cwd, &[], &["clients", "create", "--name", "Doomed", "--scope", "openid", "--json", "--database-url", &db.url]));
        let both = json(&backup(&cwd, &db.url, &["create", "--verify", "--out", out.path().to_str().expect("utf8"), "--json"]));
        assert_eq!(both["verified"]["ok"], true, "{both}");
        json(&backup(&cwd, &db.url, &["restore", file.to_str().expect("utf8"), "--yes", "--json"]));
        assert!(contents(&cwd, &db.url) == payload, "restoring replaces what was there");
    }

    async fn a_backup_taken_under_load_restores_to_its_header_counts(backend: Backend) {
        let server = std::sync::Arc::new(crate::support::oauth::token_server(backend, &[]).await);
        let machine = machine_client(&server, "client_secret_basic").await;
        let cwd = server.db.dir.path().to_path_buf();
        let url = server.db.url.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut load = Vec::new();
        for _ in 0..4 {
            let (server, machine, stop, issued) = (server.clone(), machine.clone(), stop.clone(), issued.clone());
            load.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let token = token_for(&server, &machine, &[]).await;
                    // A revoked access token is a row (its jti) in oauth_tokens.
                    revoke(&server, &machine, &token, None).await;
                    issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }));
        }
        // Tokens are being issued before the backup starts ...
        while issued.load(std::sync::atomic::Ordering::Relaxed) < 20 {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let before = issued.load(std::sync::atomic::Ordering::Relaxed);
        let out = tempfile::tempdir().expect("out");
        let out_path = out.path().to_path_buf();
        let (cwd2, url2) = (cwd.clone(), url.clone());
        let (file, created) = tokio::task::spawn_blocking(move || create(&cwd2, &url2, &out_path)).await.expect("create");
        // ... and while it runs.
        let during = issued.load(std::sync::atomic::Ordering::Relaxed);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in load {
            task.await.expect("load");
        }
        let after = issued.load(std::sync::atomic::Ordering::Relaxed);
        assert!(during > before, "the server issued tokens while the backup ran ({before} → {during})");
        let tokens = rows(&created, "oauth_tokens");
        assert!(tokens >= before && tokens <= after, "{before} <= {tokens} <= {after}");

        let (header, _) = split(&file);
        for into in [backend, other(backend)] {
            let db = target(into);
            let restored = json(&backup(&cwd, &db.url, &["restore", file.to_str().expect("utf8"), "--yes", "--json"]));
            assert_eq!(counts(&restored), header_counts(&header), "{into:?}");
        }
        let verified = json(&truxectl(&cwd, &[], &["backup", "verify", file.to_str().expect("utf8"), "--json", "--database-url", &url]));
        assert_eq!(verified["ok"], true, "{verified}");
    }

    async fn damaged_foreign_and_newer_files_are_refused_before_anything_changes(backend: Backend) {
        let mut server = populated(backend).await;
        let cwd = server.db.dir.path().to_path_buf();
        let out = tempfile::tempdir().expect("out");
        let (good, _) = create(&cwd, &server.db.url, out.path());
        server.stop().await;
        let bytes = std::fs::read(&good).expect("read");

        let db = target(backend);
        db.migrate();
        json(&truxectl(&cwd, &[], &["clients", "create", "--name", "Keep me", "--scope", "openid", "--json", "--database-url", &db.url]));
        let before = contents(&cwd, &db.url);

        let mut flipped = bytes.clone();
        let middle = bytes.len() * 2 / 3;
        flipped[middle] ^= 0x01;
        let (header, payload) = split(&good);
        let with_header = |edit: &dyn Fn(&mut Value)| {
            let mut header = header.clone();
            edit(&mut header);
            let mut file = gzip(format!("{header}\n").as_bytes());
            file.extend_from_slice(&gzip(&payload));
            file
        };
        let random: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
            ("flipped", flipped, &["corrupt"]),
            ("truncated", bytes[..bytes.len() / 2].to_vec(), &["truncated"]),
            ("cut-at-the-end", bytes[..bytes.len() - 3].to_vec(), &[]),
            ("random-gzip", gzip(&random), &["not a Truxe backup"]),
            ("not-gzip", random.clone(), &["not a Truxe backup", "gzip"]),
            ("pg_dump", gzip(b"--\n-- PostgreSQL database dump\n--\nSET statement_timeout = 0;\n"), &["not a Truxe backup"]),
            ("empty", Vec::new(), &["not a Truxe backup", "empty"]),
            ("newer-schema", with_header(&|h| {
                h["schema_version"] = "29991231000000".into();
                h["migrations"].as_array_mut().expect("list").push("29991231000000".into());
            }), &["newer", "29991231000000"]),
            ("newer-format", with_header(&|h| h["format_version"] = 9.into()), &["format 9", "newer"]),
            ("wrong-counts", with_header(&|h| h["tables"][0]["rows"] = 999.into()), &["corrupt", "999"]),
        ];
        for (name, data, says) in cases {
            let path = out.path().join(format!("{name}.gz"));
            std::fs::write(&path, &data).expect("write");
            let file = path.to_str().expect("utf8");
            let verify = truxectl(&cwd, &[], &["backup", "verify", file, "--database-url", &db.url]);
            assert_eq!(verify.status.code(), Some(1), "{name}: verify must fail:\n{}", text(&verify));
            let message = text(&verify);
            assert!(says.iter().all(|s| message.contains(s)) && !message.contains("panicked"), "{name}: {message}");
            let record: Value = serde_json::from_slice(&std::fs::read(format!("{file}.verified.json")).expect("a record of the failure")).expect("json");
            assert_eq!(record["ok"], false, "{name}");

            let restore = backup(&cwd, &db.url, &["restore", file, "--yes"]);
            assert_eq!(restore.status.code(), Some(1), "{name}: restore must refuse:\n{}", text(&restore));
            let message = text(&restore);
            assert!(says.iter().all(|s| message.contains(s)) && !message.contains("panicked"), "{name}: {message}");
            assert!(contents(&cwd, &db.url) == before, "{name}: the target changed");
        }
        let missing = backup(&cwd, &db.url, &["restore", "/nonexistent/truxe_20260101_000000.jsonl.gz", "--yes"]);
        assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
        assert!(text(&missing).contains("/nonexistent/"), "{}", text(&missing));
        // Without a terminal and without --yes: refused, nothing changed.
        let unconfirmed = backup(&cwd, &db.url, &["restore", good.to_str().expect("utf8")]);
        assert_eq!(unconfirmed.status.code(), Some(1), "{}", text(&unconfirmed));
        assert!(text(&unconfirmed).contains("--yes"), "{}", text(&unconfirmed));
        assert!(contents(&cwd, &db.url) == before, "unconfirmed: the target changed");
    }

    async fn restore_refuses_while_a_server_runs_on_the_target(backend: Backend) {
        let source = target(backend);
        source.migrate();
        let cwd = source.dir.path().to_path_buf();
        json(&truxectl(&cwd, &[], &["clients", "create", "--name", "Backed up", "--scope", "openid", "--json", "--database-url", &source.url]));
        let out = tempfile::tempdir().expect("out");
        let (file, created) = create(&cwd, &source.url, out.path());
        let file = file.to_str().expect("utf8").to_string();

        // A truxe-server process on the target.
        let db = target(backend);
        if backend == Backend::Postgres {
            db.migrate();
        }
        let url = db.url.clone();
        let key = test_key_pem();
        let env = [("DATABASE_URL", url.as_str()), ("JWT_PRIVATE_KEY", key.as_str()), ("LOG_LEVEL", "warn")];
        let running = ServerProcess::start(db.dir.path(), &env, free_port()).await;
        let before = contents(&cwd, &url);
        let refused = backup(&cwd, &url, &["restore", &file, "--yes"]);
        assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
        assert!(text(&refused).contains("server is running") && text(&refused).contains("--force"), "{}", text(&refused));
        assert!(contents(&cwd, &url) == before, "refused: nothing changed");

        let forced = json(&backup(&cwd, &url, &["restore", &file, "--yes", "--force", "--json"]));
        assert_eq!(counts(&forced), counts(&created));
        let (status, _) = running.terminate();
        assert!(status.success());
        if backend == Backend::Postgres {
            wait_until_no_server_connections(&url);
        }
        // Stopped: no --force needed.
        json(&backup(&cwd, &url, &["restore", &file, "--yes", "--json"]));
    }

    async fn an_older_backup_restores_and_is_migrated_up(backend: Backend) {
        let source = target(backend);
        source.migrate();
        let cwd = source.dir.path().to_path_buf();
        json(&truxectl(&cwd, &[], &["clients", "create", "--name", "Old", "--scope", "openid", "--json", "--database-url", &source.url]));
        json(&truxectl(&cwd, &[], &["migrate", "revert", "--yes", "--json", "--database-url", &source.url]));
        let out = tempfile::tempdir().expect("out");
        let (file, created) = create(&cwd, &source.url, out.path());
        let latest: Vec<Value> = json(&truxectl(&cwd, &[], &["migrate", "status", "--json", "--database-url", &source.url]))["migrations"].as_array().expect("list").clone();
        assert!(latest.last().map(|m| m["applied"] == false).unwrap_or(false), "the source is one migration behind");

        // Into a database at the latest version with data of its own: reverted to the backup's
        // version, loaded, migrated up again.
        let db = target(backend);
        db.migrate();
        json(&truxectl(&cwd, &[], &["clients", "create", "--name", "Replaced", "--scope", "openid", "--json", "--database-url", &db.url]));
        let restored = json(&backup(&cwd, &db.url, &["restore", file.to_str().expect("utf8"), "--yes", "--json"]));
        assert_eq!(counts(&restored), counts(&created));
        assert_eq!(restored["reverted"].as_array().map(Vec::len), Some(1), "{restored}");
        let status = json(&truxectl(&cwd, &[], &["migrate", "status", "--json", "--database-url", &db.url]));
        assert!(status["migrations"].as_array().expect("list").iter().all(|m| m["applied"] == true), "{status}");
        let clients = json(&truxectl(&cwd, &[], &["clients", "list", "--json", "--database-url", &db.url]));
        let names: Vec<&str> = clients["clients"].as_array().expect("clients").iter().filter_map(|c| c["client_name"].as_str()).collect();
        assert_eq!(names, ["Old"], "{clients}");
    }
}

/// PostgreSQL ends a connection's backend a moment after its client exited: wait (woken by
/// polling, bounded) until no `truxe-server/…` connection is left on the database.
fn wait_until_no_server_connections(url: &str) {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = diesel::PgConnection::establish(url).expect("connect");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let count: Count = diesel::sql_query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'truxe-server/%'",
        )
        .get_result(&mut conn)
        .expect("count");
        if count.n == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the stopped server's connections did not go away");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgresql",
    }
}

#[test]
fn list_and_prune_follow_the_guides_rotation() {
    let db = TestDb::new(Backend::Sqlite);
    db.migrate();
    let cwd = db.dir.path();
    let out = tempfile::tempdir().expect("out");
    let dir = out.path().to_str().expect("utf8");
    let (file, _) = create(cwd, &db.url, out.path());
    let _ = json(&truxectl(cwd, &[], &["backup", "verify", file.to_str().expect("utf8"), "--json"]));
    let today = file.file_name().expect("name").to_string_lossy().into_owned();
    // Older backups, as earlier runs would have left them (the guide's script's too).
    let old = ["truxe_20200101_020000.jsonl.gz", "truxe_20200102_020000.sql.gz"];
    for name in old {
        std::fs::copy(&file, out.path().join(name)).expect("copy");
    }
    std::fs::copy(format!("{}.verified.json", file.display()), out.path().join(format!("{}.verified.json", old[0])))
        .expect("copy");
    std::fs::write(out.path().join("notes.txt"), "not a backup").expect("write");

    let listed = json(&truxectl(cwd, &[], &["backup", "list", "--dir", dir, "--json"]));
    let names: Vec<&str> =
        listed["backups"].as_array().expect("list").iter().filter_map(|b| b["name"].as_str()).collect();
    assert_eq!(names, [today.as_str(), old[1], old[0]], "newest first, only backups: {listed}");
    let shown = truxectl(cwd, &[], &["backup", "list", "--dir", dir]);
    assert!(text(&shown).contains(&today) && text(&shown).contains("ok "), "{}", text(&shown));

    let dry = json(&truxectl(cwd, &[], &["backup", "prune", "--keep-days", "30", "--dir", dir, "--dry-run", "--json"]));
    assert_eq!(dry["deleted"].as_array().map(Vec::len), Some(2), "{dry}");
    assert!(out.path().join(old[0]).exists(), "a dry run deletes nothing");
    let pruned = json(&truxectl(cwd, &[], &["backup", "prune", "--keep-days", "30", "--dir", dir, "--json"]));
    assert_eq!(pruned["kept"].as_array().map(Vec::len), Some(1), "{pruned}");
    let mut left: Vec<String> = std::fs::read_dir(out.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut expected = vec![today.clone(), format!("{today}.verified.json"), "notes.txt".to_string()];
    expected.sort();
    assert_eq!(left, expected, "the old backups and their records are gone");

    let bad = truxectl(cwd, &[], &["backup", "prune", "--dir", dir]);
    assert_eq!(bad.status.code(), Some(2), "--keep-days is required: {}", text(&bad));
}

#[test]
fn a_configuration_error_exits_78() {
    let cwd = tempfile::tempdir().expect("dir");
    let output = truxectl(
        cwd.path(),
        &[("DATABASE_POOL_MAX", "many")],
        &["backup", "create", "--out", cwd.path().to_str().expect("utf8")],
    );
    assert_eq!(output.status.code(), Some(78), "{}", text(&output));
    assert!(text(&output).contains("DATABASE_POOL_MAX"), "{}", text(&output));
    let missing = truxectl(
        cwd.path(),
        &[],
        &["backup", "create", "--database-url", &format!("sqlite://{}/none.db", cwd.path().display())],
    );
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(text(&missing).contains("nothing to back up"), "{}", text(&missing));
}

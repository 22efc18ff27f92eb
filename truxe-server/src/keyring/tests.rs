//! The key ring over a real (in-memory SQLite) `signing_keys` table, with the time passed in.

use std::sync::OnceLock;

use diesel::Connection;

use super::schedule::{KeyState, NoSigner, Timing};
use super::*;
use crate::jwt::Rejection;
use crate::secret::Secret;
use crate::store::signing_keys as store;
use crate::store::{AnyConnection, migrations};

/// Publish delay 100 s, tokens 50 s, so keys retire 50 + 62 s after their successor activates.
fn policy(rotation: Option<i64>) -> Policy {
    Policy {
        timing: Timing::new(100, 50, rotation),
        jwks_max_age: 30,
        refresh_interval: Duration::from_secs(5),
        algorithm: Algorithm::EdDSA,
        schedule_runs: rotation.is_some(),
    }
}

fn sealing(secret: &str) -> SealingKey {
    SealingKey::derive(&Secret::new(secret.to_string()))
}

fn sources(env_key: Option<SigningKey>, rotation: Option<i64>) -> Sources {
    Sources {
        policy: policy(rotation),
        env_key,
        sealing: sealing("the deployment's session secret"),
        data_dir_key: None,
        may_reseal: false,
    }
}

fn db() -> AnyConnection {
    let mut conn = AnyConnection::Sqlite(diesel::SqliteConnection::establish(":memory:").expect("sqlite"));
    migrations::apply_all(&mut conn).expect("migrate");
    conn
}

fn env_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate(Algorithm::EdDSA, 0).expect("key"))
}

fn claims(now: i64) -> AccessTokenClaims {
    AccessTokenClaims {
        iss: "https://auth.example.com".into(),
        sub: "cl_1".into(),
        aud: "https://api.example.com".into(),
        exp: now + 50,
        iat: now,
        jti: "jti-1".into(),
        client_id: "cl_1".into(),
        scope: String::new(),
        auth_time: None,
        gid: None,
    }
}

fn kids(set: &KeySet, now: i64) -> Vec<String> {
    set.published(now).iter().map(|e| e.kid.clone()).collect()
}

fn signer_kid(set: &KeySet, now: i64) -> String {
    set.signer(now).expect("a signer").0.kid.clone()
}

#[test]
fn the_operators_key_is_recorded_and_signs() {
    let mut conn = db();
    let set = bootstrap(&mut conn, &sources(Some(env_key().clone()), None), 1_000).expect("bootstrap");
    assert_eq!(signer_kid(&set, 1_000), env_key().kid());
    let (jwks, max_age) = set.jwks(1_000);
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(jwks["keys"][0], env_key().public_jwk());
    assert_eq!(max_age, 30);
    let row = store::find(&mut conn, env_key().kid()).expect("find").expect("row");
    assert_eq!((row.origin, row.private_key_sealed.as_deref(), row.activates_at), (store::Origin::Env, None, 1_000));
    // A restart keeps the first recording.
    bootstrap(&mut conn, &sources(Some(env_key().clone()), None), 2_000).expect("again");
    assert_eq!(store::find(&mut conn, env_key().kid()).expect("find").expect("row").activates_at, 1_000);
}

#[test]
fn production_without_a_key_generates_one_sealed_into_the_database() {
    let mut conn = db();
    let set = bootstrap(&mut conn, &sources(None, Some(1_000)), 1_000).expect("bootstrap");
    let kid = signer_kid(&set, 1_000);
    let row = store::find(&mut conn, &kid).expect("find").expect("row");
    assert_eq!(row.origin, store::Origin::Generated);
    let sealed = row.private_key_sealed.expect("sealed");
    assert!(sealed.starts_with("v1.") && !sealed.contains("PRIVATE"), "{sealed}");
    // A second instance with the same SESSION_SECRET signs with the same key.
    let other = bootstrap(&mut conn, &sources(None, Some(1_000)), 1_001).expect("second instance");
    assert_eq!(signer_kid(&other, 1_001), kid);
    assert_eq!(store::all(&mut conn).expect("all").len(), 1, "one key, not one per instance");
}

#[test]
fn another_session_secret_is_a_clear_start_up_error() {
    let mut conn = db();
    let set = bootstrap(&mut conn, &sources(None, Some(1_000)), 1_000).expect("bootstrap");
    let kid = signer_kid(&set, 1_000);
    let mut wrong = sources(None, Some(1_000));
    wrong.sealing = sealing("a changed session secret");
    let error = bootstrap(&mut conn, &wrong, 1_001).expect_err("cannot decrypt");
    assert!(matches!(error, KeyRingError::Undecryptable { .. }) && error.is_configuration(), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&kid) && message.contains("(active)") && message.contains("SESSION_SECRET"), "{message}");
}

#[test]
fn the_data_directory_key_is_the_first_key_in_development() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("jwt-private.pem");
    let mut conn = db();
    let mut dev = sources(None, None);
    dev.data_dir_key = Some(path.clone());
    dev.may_reseal = true;
    let set = bootstrap(&mut conn, &dev, 1_000).expect("bootstrap");
    let kid = signer_kid(&set, 1_000);
    let file_key = crate::keys::load_or_generate(&path, Algorithm::EdDSA).expect("the file").0;
    assert_eq!(file_key.kid(), kid, "the key written to the data directory signs");
    // A development session secret generated anew (the file deleted): the file's key is sealed again.
    dev.sealing = sealing("a new development secret");
    let set = bootstrap(&mut conn, &dev, 1_001).expect("resealed from the file");
    assert_eq!(signer_kid(&set, 1_001), kid);
    assert_eq!(store::all(&mut conn).expect("all").len(), 1);
    // With a configured SESSION_SECRET a mismatch is reported, never papered over.
    dev.sealing = sealing("a configured SESSION_SECRET");
    dev.may_reseal = false;
    assert!(matches!(bootstrap(&mut conn, &dev, 1_002), Err(KeyRingError::Undecryptable { .. })));
}

/// Publishes a next key at 1_000: it activates at 1_100, the old key retires at 1_212.
fn rotated() -> (AnyConnection, Sources, String, String) {
    let mut conn = db();
    let sources = sources(None, None);
    let set = bootstrap(&mut conn, &sources, 0).expect("bootstrap");
    let old = signer_kid(&set, 0);
    let key = SigningKey::generate(Algorithm::EdDSA, 0).expect("key");
    let next = load::publish_next(&mut conn, &sources.sealing, &key, &sources.policy.timing, 1_000, "system")
        .expect("publish")
        .expect("published");
    assert_eq!((next.activates_at, next.created_at), (1_100, 1_000));
    (conn, sources, old, key.kid().to_string())
}

#[test]
fn a_rotation_publishes_first_signs_later_and_retires_after_the_last_token() {
    let (mut conn, sources, old, new) = rotated();
    let first = bootstrap(&mut conn, &sources, 1_000).expect("read");
    let set = refresh(&mut conn, &sources, &first, 1_050).expect("refresh");
    assert!(Arc::ptr_eq(&first.entries[0], &set.entries[0]), "known keys are not parsed again");

    assert_eq!(kids(&set, 1_000), [old.clone(), new.clone()], "published at once, the active key first");
    assert_eq!(signer_kid(&set, 1_099), old, "not signing before its activation");
    assert_eq!(signer_kid(&set, 1_100), new, "signing from its activation, without a refresh");
    assert_eq!(kids(&set, 1_100), [new.clone(), old.clone()]);
    let views = set.views(1_100);
    assert_eq!(views[0].state, KeyState::Retiring);
    assert_eq!(views[0].retires_at, Some(1_212));

    // A token the old key signed just before the switch verifies until it expires.
    let ring = KeyRing::new(refresh(&mut conn, &sources, &set, 1_099).expect("refresh"), sources.clone());
    let token = ring.request_keys(1_099).encode(&claims(1_099)).expect("sign");
    assert_eq!(crate::jwt::header_kid(&token).as_deref(), Some(old.as_str()));
    assert!(ring.request_keys(1_148).verify(&token, "https://auth.example.com", 1_148).is_ok());
    let fresh = ring.request_keys(1_100).encode(&claims(1_100)).expect("sign");
    assert_eq!(crate::jwt::header_kid(&fresh).as_deref(), Some(new.as_str()));
    let after = refresh(&mut conn, &sources, &set, 1_212).expect("refresh");
    assert_eq!(kids(&after, 1_212), vec![new], "retired: gone from the JWKS");
    let keys_after = RequestKeys { set: Arc::new(after), signer: Err(NoSigner::NoActiveKey) };
    assert_eq!(keys_after.verify(&token, "https://auth.example.com", 1_148), Err(Rejection::OtherKey));

    let row = store::find(&mut conn, &old).expect("find").expect("row");
    assert_eq!(row.retired_at, Some(1_212));
    assert_eq!(row.private_key_sealed, None, "a retired key's private half is wiped");
}

#[test]
fn a_second_rotation_while_a_next_key_waits_publishes_nothing() {
    let (mut conn, sources, _, _) = rotated();
    let key = SigningKey::generate(Algorithm::EdDSA, 0).expect("key");
    let again = load::publish_next(&mut conn, &sources.sealing, &key, &sources.policy.timing, 1_050, "system")
        .expect("publish");
    assert!(again.is_none());
    assert_eq!(store::all(&mut conn).expect("all").len(), 2);
}

#[test]
fn the_schedule_publishes_one_next_key_when_due() {
    let mut conn = db();
    let scheduled = sources(None, Some(1_000));
    let set = bootstrap(&mut conn, &scheduled, 0).expect("bootstrap");
    let first = signer_kid(&set, 0);
    let set = refresh(&mut conn, &scheduled, &set, 899).expect("refresh");
    assert_eq!(set.entries.len(), 1, "not due yet");
    let set = refresh(&mut conn, &scheduled, &set, 900).expect("refresh");
    let other = refresh(&mut conn, &scheduled, &set, 901).expect("another instance");
    assert_eq!(store::all(&mut conn).expect("all").len(), 2, "one next key for all instances");
    assert_eq!(other.views(901)[1].state, KeyState::Next);
    assert_eq!(other.views(901)[1].activates_at, 1_000);
    assert_eq!(signer_kid(&other, 999), first);
    assert_ne!(signer_kid(&other, 1_000), first);
    // The operator's key is never replaced by the schedule.
    let mut conn = db();
    let mut with_env = sources(Some(env_key().clone()), Some(1_000));
    with_env.policy.schedule_runs = false;
    let set = bootstrap(&mut conn, &with_env, 0).expect("bootstrap");
    let set = refresh(&mut conn, &with_env, &set, 5_000).expect("refresh");
    assert_eq!(kids(&set, 5_000), [env_key().kid().to_string()]);
}

#[test]
fn an_instance_that_cannot_read_the_keys_stops_signing_after_a_publish_delay() {
    let mut conn = db();
    let set = bootstrap(&mut conn, &sources(Some(env_key().clone()), None), 1_000).expect("bootstrap");
    assert_eq!(set.jwks(1_000).1, 30);
    assert_eq!(set.jwks(1_080).1, 20, "never cached past what the set can know");
    assert_eq!(set.jwks(1_200).1, 0);
    assert!(set.signer(1_100).is_ok());
    assert!(matches!(set.signer(1_101), Err(NoSigner::Stale { .. })));
    assert!(set.probe(1_101).is_err(), "readiness says so");
}

#[test]
fn a_key_held_elsewhere_is_published_and_verifies_but_does_not_sign_here() {
    // Instance A has JWT_PRIVATE_KEY; the database's active key is B's (another operator key).
    let mut conn = db();
    let other = SigningKey::generate(Algorithm::EdDSA, 0).expect("key");
    bootstrap(&mut conn, &sources(Some(other.clone()), None), 0).expect("B starts");
    let b_token =
        KeyRing::new(bootstrap(&mut conn, &sources(Some(other.clone()), None), 500).expect("B"), sources(None, None))
            .request_keys(500)
            .encode(&claims(500))
            .expect("B signs");
    let a = bootstrap(&mut conn, &sources(Some(env_key().clone()), None), 500).expect("A starts");
    // A's key is newer, so active; B's retires 112 s after A's recording.
    assert_eq!(signer_kid(&a, 500), env_key().kid());
    let keys = RequestKeys { set: Arc::new(a), signer: Err(NoSigner::NoActiveKey) };
    assert!(keys.verify(&b_token, "https://auth.example.com", 501).is_ok(), "B's tokens verify at A");
    let b = bootstrap(&mut conn, &sources(Some(other.clone()), None), 501).expect("B reads");
    let (entry, choice) = b.signer(501).expect("B may still sign");
    assert_eq!((entry.kid.as_str(), matches!(choice, schedule::Choice::Fallback { .. })), (other.kid(), true));
    assert!(b.signer(562).is_ok());
    assert!(matches!(b.signer(563), Err(NoSigner::NotHeld { .. })), "not with a key retiring before its tokens expire");
}

#[test]
fn the_summary_tells_doctor_whose_key_signs() {
    use crate::store::signing_keys::NoteLevel;
    let mut conn = db();
    let env = sources(Some(env_key().clone()), None);
    bootstrap(&mut conn, &env, 0).expect("bootstrap");
    let summary = store::summary(&mut conn, Some(env_key().kid()), 86_400 * 3).expect("summary");
    assert!(summary.active_is_env_key());
    let notes = summary.notes(Some(Duration::from_secs(90 * 86_400)));
    assert_eq!(notes[0].0, NoteLevel::Ok);
    assert!(
        notes[0].1.contains("operator's JWT_PRIVATE_KEY")
            && notes[0].1.contains("automatic rotation does not apply")
            && notes[0].1.contains("3 days"),
        "{notes:?}"
    );
    assert!(notes.iter().any(|(_, n)| n.contains("publishes 1 key(s)")), "{notes:?}");

    // A generated key took over: JWT_PRIVATE_KEY no longer signs, and doctor warns about it.
    let key = SigningKey::generate(Algorithm::EdDSA, 0).expect("key");
    load::publish_next(&mut conn, &env.sealing, &key, &env.policy.timing, 1_000, "system")
        .expect("publish")
        .expect("next");
    let notes = store::summary(&mut conn, Some(env_key().kid()), 1_050).expect("summary").notes(None);
    assert!(notes.iter().any(|(_, n)| n.contains(key.kid()) && n.contains("takes over")), "{notes:?}");
    let notes = store::summary(&mut conn, Some(env_key().kid()), 1_100).expect("summary").notes(None);
    let warning = notes.iter().find(|(level, _)| *level == NoteLevel::Warn).expect("a warning");
    assert!(warning.1.contains("no longer signs") && warning.1.contains(key.kid()), "{notes:?}");
    assert!(notes.iter().any(|(_, n)| n.contains("1 active, 1 retiring, 0 next")), "{notes:?}");
    let empty = store::summary(&mut db(), None, 0).expect("summary").notes(None);
    assert_eq!(empty[0].0, NoteLevel::Fail);
}

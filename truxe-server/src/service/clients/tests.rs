use super::*;
use crate::model::client::{AuthMethod, ClientStatus, GrantType};
use crate::oauth::scope::ScopeSet;
use crate::service::token::Audiences;

const API: &str = "https://api.example.com";
const REPORTS: &str = "https://reports.example.com";

/// A server with one extra scope, two audiences and the default lifetimes.
fn rules() -> Rules {
    Rules {
        scopes_supported: ["openid", "profile", "email", "offline_access", "orders:read"].map(String::from).to_vec(),
        scopes: ScopeSet::parse("openid profile email offline_access orders:read").expect("scopes"),
        audiences: Audiences::new(Some(&format!("{API},{REPORTS}")), "https://auth.example.com"),
        access_token_ttl: 900,
        refresh_token_ttl: 7 * 86_400,
        authorization_code_ttl: 600,
        refresh_family_ttl: 30 * 86_400,
    }
}

fn input(json: serde_json::Value) -> ClientInput {
    match serde_json::from_value(json) {
        Ok(input) => input,
        Err(e) => panic!("test input does not parse: {e}"),
    }
}

fn valid(json: serde_json::Value) -> Client {
    match validate_input(input(json.clone()), &rules()) {
        Ok(settings) => settings,
        Err(e) => panic!("{json} should be valid: {e}"),
    }
}

fn invalid(json: serde_json::Value) -> ValidationError {
    match validate_input(input(json.clone()), &rules()) {
        Ok(client) => panic!("{json} should be refused, got {client:?}"),
        Err(e) => e,
    }
}

#[test]
fn redirect_uri_rules() {
    let accepted = [
        "https://app.example.com/callback",
        "https://app.example.com:8443/cb?tenant=1",
        "http://127.0.0.1/callback",
        "http://127.0.0.1:53682/callback",
        "http://[::1]:8080/cb",
        "http://localhost:3000/auth/callback",
        "com.example.app:/oauth2redirect",
        "com.example.app://callback",
    ];
    for uri in accepted {
        assert_eq!(check_redirect_uri(uri), Ok(()), "{uri}");
    }
    let refused = [
        ("", "empty"),
        ("/callback", "absolute"),
        ("app.example.com/callback", "absolute"),
        ("https://app.example.com/cb#frag", "fragment"),
        ("https://app.example.com/cb#", "fragment"),
        ("http://app.example.com/callback", "loopback"),
        ("http://127.0.0.2/callback", "loopback"),
        ("http://localhost.evil.com/cb", "loopback"),
        ("http://127.0.0.1.nip.io/cb", "loopback"),
        ("https://*.example.com/callback", "wildcard"),
        ("https://app.example.com/*", "wildcard"),
        ("javascript:alert(1)", "scheme"),
        ("data:text/html,hi", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("myapp:/callback", "scheme"),
        ("https://user:pw@app.example.com/cb", "credentials"),
        ("https://app.example.com/c b", "spaces"),
        ("https://app.example.com/\ncb", "control"),
        ("HTTPS://app.example.com/cb", "lower case"),
        ("https:/app.example.com/cb", "https://"),
    ];
    for (uri, why) in refused {
        let message = check_redirect_uri(uri).err().unwrap_or_else(|| panic!("{uri:?} should be refused"));
        assert!(message.contains(why), "{uri:?}: {message}");
    }
    let long = format!("https://app.example.com/{}", "a".repeat(MAX_URI_BYTES));
    assert!(check_redirect_uri(&long).is_err_and(|m| m.contains("2048")));
}

#[test]
fn defaults_for_a_web_app_and_a_service() {
    let web = valid(serde_json::json!({
        "client_name": "  Production App ",
        "redirect_uris": ["https://app.example.com/auth/callback"],
    }));
    assert_eq!(web.client_name, "Production App");
    assert_eq!(web.grant_types, [GrantType::AuthorizationCode, GrantType::RefreshToken]);
    assert_eq!(web.token_endpoint_auth_method, AuthMethod::ClientSecretBasic);
    assert_eq!(web.allowed_scopes.to_string(), "email offline_access openid profile");
    assert!(web.require_pkce && web.require_consent && !web.trusted);
    assert_eq!(web.status, ClientStatus::Active);

    let service = valid(serde_json::json!({ "client_name": "Billing", "allowed_scopes": ["orders:read"] }));
    assert_eq!(service.grant_types, [GrantType::ClientCredentials]);
    let e = invalid(serde_json::json!({ "client_name": "Billing" }));
    assert_eq!(e.field.as_deref(), Some("allowed_scopes"));
    assert!(e.message.contains("orders:read"), "{e}");
}

#[test]
fn the_guides_example_registers() {
    let s = valid(serde_json::json!({
        "client_name": "Production App",
        "redirect_uris": ["https://app.yourdomain.com/auth/callback", "https://yourdomain.com/auth/callback"],
        "allowed_scopes": ["openid", "email", "profile"],
        "require_pkce": true,
        "require_consent": false,
        "trusted": true,
        "client_uri": "https://yourdomain.com",
        "logo_uri": "https://yourdomain.com/logo.png",
        "tos_uri": "https://yourdomain.com/terms",
        "policy_uri": "https://yourdomain.com/privacy"
    }));
    assert!(s.trusted && !s.require_consent);
    assert_eq!(s.logo_uri.as_deref(), Some("https://yourdomain.com/logo.png"));
}

#[test]
fn public_clients() {
    let public = valid(serde_json::json!({
        "client_name": "SPA", "token_endpoint_auth_method": "none", "redirect_uris": ["https://spa.example.com/cb"]
    }));
    assert!(public.require_pkce);
    assert_eq!(public.grant_types, [GrantType::AuthorizationCode, GrantType::RefreshToken]);

    let cases = [
        (
            serde_json::json!({"token_endpoint_auth_method": "none", "redirect_uris": ["https://a.example/cb"],
            "require_pkce": false}),
            "require_pkce",
        ),
        (
            serde_json::json!({"token_endpoint_auth_method": "none", "grant_types": ["client_credentials"],
            "allowed_scopes": ["openid"]}),
            "grant_types",
        ),
        (serde_json::json!({"token_endpoint_auth_method": "none"}), "redirect_uris"),
    ];
    for (mut json, field) in cases {
        json["client_name"] = "x".into();
        assert_eq!(invalid(json.clone()).field.as_deref(), Some(field), "{json}");
    }
}

#[test]
fn field_level_errors() {
    let cases = [
        (serde_json::json!({}), "client_name"),
        (serde_json::json!({"client_name": "   "}), "client_name"),
        (serde_json::json!({"client_name": "a".repeat(201)}), "client_name"),
        (serde_json::json!({"client_name": "bad\u{0}name"}), "client_name"),
        (serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb", "/cb"]}), "redirect_uris[1]"),
        (
            serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb", "https://a.example/cb"]}),
            "redirect_uris[1]",
        ),
        (
            serde_json::json!({"client_name": "x", "redirect_uris": (0..21).map(|i| format!("https://a.example/{i}")).collect::<Vec<_>>()}),
            "redirect_uris",
        ),
        (
            serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "post_logout_redirect_uris": ["http://a.example/"]}),
            "post_logout_redirect_uris[0]",
        ),
        (
            serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "allowed_scopes": ["openid", "admin"]}),
            "allowed_scopes[1]",
        ),
        (
            serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "allowed_scopes": []}),
            "allowed_scopes",
        ),
        (
            serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "allowed_scopes": ["open id"]}),
            "allowed_scopes[0]",
        ),
        (
            serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "allowed_scopes": vec!["openid"; 51]}),
            "allowed_scopes",
        ),
        (serde_json::json!({"client_name": "x", "grant_types": ["password"]}), "grant_types[0]"),
        (serde_json::json!({"client_name": "x", "grant_types": []}), "grant_types"),
        (
            serde_json::json!({"client_name": "x", "grant_types": ["client_credentials", "client_credentials"]}),
            "grant_types[1]",
        ),
        (
            serde_json::json!({"client_name": "x", "grant_types": ["refresh_token", "client_credentials"], "allowed_scopes": ["openid"]}),
            "grant_types",
        ),
        (serde_json::json!({"client_name": "x", "grant_types": ["authorization_code"]}), "redirect_uris"),
        (
            serde_json::json!({"client_name": "x", "token_endpoint_auth_method": "private_key_jwt"}),
            "token_endpoint_auth_method",
        ),
        (
            serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "logo_uri": "http://cdn.example/l.png"}),
            "logo_uri",
        ),
        (
            serde_json::json!({"client_name": "x", "redirect_uris": ["https://a.example/cb"], "tos_uri": "terms.html"}),
            "tos_uri",
        ),
    ];
    for (json, field) in cases {
        let e = invalid(json.clone());
        assert_eq!(e.field.as_deref(), Some(field), "{json}: {e}");
        assert!(!e.message.is_empty());
    }
}

#[test]
fn json_bodies_name_the_field_at_fault() {
    let e = parse_json::<ClientInput>(br#"{"client_name": "x", "colour": "red"}"#).err();
    assert_eq!(e.as_ref().and_then(|e| e.field.as_deref()), Some("colour"), "{e:?}");
    let e = parse_json::<ClientInput>(br#"{"client_name": "x", "redirect_uris": "https://a.example/cb"}"#).err();
    assert_eq!(e.as_ref().and_then(|e| e.field.as_deref()), Some("redirect_uris"), "{e:?}");
    let e = parse_json::<ClientInput>(br#"{"client_name": null}"#).err();
    assert_eq!(e.as_ref().and_then(|e| e.field.as_deref()), Some("client_name"), "{e:?}");
    for body in [&b"{"[..], b"", b"   ", b"[1]", b"\"text\"", b"{\"a\":1}}", b"client_name=x"] {
        let e = parse_json::<ClientInput>(body).err();
        assert!(e.is_some(), "{:?}", String::from_utf8_lossy(body));
    }
    let patch = parse_json::<ClientPatch>(br#"{"logo_uri": null, "trusted": true}"#).ok();
    assert_eq!(patch.as_ref().map(|p| p.logo_uri.clone()), Some(Some(None)));
    assert!(parse_json::<ClientPatch>(br#"{"trusted": null}"#).is_err());
}

fn stored(json: serde_json::Value) -> Client {
    Client {
        client_id: "cl_test".into(),
        secret_hash: Some("hash".into()),
        created_at: 1,
        updated_at: 1,
        ..valid(json)
    }
}

fn patch(json: serde_json::Value) -> ClientPatch {
    match serde_json::from_value(json) {
        Ok(p) => p,
        Err(e) => panic!("patch does not parse: {e}"),
    }
}

#[test]
fn patches_are_checked_on_the_merged_result() {
    let client = stored(serde_json::json!({
        "client_name": "Web", "redirect_uris": ["https://a.example/cb"], "logo_uri": "https://a.example/logo.png"
    }));
    let s = validate_patch(&client, patch(serde_json::json!({"client_name": "Renamed", "logo_uri": null})), &rules());
    let s = s.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.client_name.as_str(), s.logo_uri), ("Renamed", None));
    assert_eq!(s.redirect_uris, ["https://a.example/cb"]);

    let refused = [
        (serde_json::json!({"redirect_uris": []}), "redirect_uris"),
        (serde_json::json!({"grant_types": ["refresh_token"]}), "grant_types"),
        (serde_json::json!({"token_endpoint_auth_method": "none"}), "token_endpoint_auth_method"),
        (serde_json::json!({"status": "paused"}), "status"),
    ];
    for (json, field) in refused {
        let e = validate_patch(&client, patch(json.clone()), &rules()).err();
        assert_eq!(e.and_then(|e| e.field), Some(field.to_string()), "{json}");
    }
    assert!(
        validate_patch(
            &client,
            patch(serde_json::json!({"token_endpoint_auth_method": "client_secret_post"})),
            &rules()
        )
        .is_ok()
    );

    let mut revoked = client.clone();
    revoked.status = ClientStatus::Revoked;
    let e = validate_patch(&revoked, patch(serde_json::json!({"status": "active"})), &rules()).err();
    assert_eq!(e.and_then(|e| e.field).as_deref(), Some("status"));
}

#[test]
fn secrets_authenticate_with_grace() {
    let key = b"k";
    let (old, new) = ("cs_old", "cs_new");
    let mut client = stored(serde_json::json!({"client_name": "x", "allowed_scopes": ["orders:read"]}));
    client.secret_hash = Some(client_secret::hash(key, new));
    assert!(authenticate_secret(&client, key, new, 100));
    assert!(!authenticate_secret(&client, key, old, 100));
    assert!(!authenticate_secret(&client, key, "", 100));

    client.previous_secret_hash = Some(client_secret::hash(key, old));
    client.previous_secret_expires_at = Some(200);
    assert!(authenticate_secret(&client, key, old, 199));
    assert!(!authenticate_secret(&client, key, old, 200), "the grace ends at its instant");
    assert!(authenticate_secret(&client, key, new, 500));
    assert!(!authenticate_secret(&client, b"other key", new, 100));

    client.secret_hash = None;
    client.previous_secret_hash = None;
    assert!(!authenticate_secret(&client, key, new, 100), "a public client has no secret");
}

#[test]
fn client_ids_are_plausible_and_unique() {
    let (a, b) = (generate_client_id(), generate_client_id());
    assert!(model::is_plausible_client_id(&a), "{a}");
    assert_eq!(a.len(), 3 + 22);
    assert_ne!(a, b);
}

fn full_registration() -> serde_json::Value {
    serde_json::json!({
        "client_name": "Reports",
        "redirect_uris": ["https://reports.example.com/cb"],
        "post_logout_redirect_uris": ["https://reports.example.com/"],
        "allowed_scopes": ["openid", "orders:read"],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_method": "client_secret_post",
        "require_pkce": false,
        "require_consent": false,
        "trusted": true,
        "client_uri": "https://reports.example.com",
        "logo_uri": "https://reports.example.com/logo.png",
        "tos_uri": "https://reports.example.com/tos",
        "policy_uri": "https://reports.example.com/privacy",
        "allowed_audiences": [REPORTS, API],
        "introspection_audiences": [REPORTS],
        "access_token_ttl": 300,
        "refresh_token_ttl": 86_400,
        "authorization_code_ttl": 60,
        "status": "suspended",
    })
}

#[test]
fn policies_are_registered_and_default_to_the_servers() {
    let client = valid(full_registration());
    assert_eq!(client.allowed_audiences, [REPORTS, API]);
    assert_eq!(client.introspection_audiences, [REPORTS]);
    assert_eq!(
        (client.access_token_ttl, client.refresh_token_ttl, client.authorization_code_ttl),
        (Some(300), Some(86_400), Some(60))
    );
    assert_eq!(client.access_token_ttl(900), 300);
    assert!(client.allows_audience(REPORTS, API) && client.introspects_for(REPORTS));

    // The limits themselves are allowed; null is the same as absent in a registration.
    let at_limits = valid(serde_json::json!({
        "client_name": "x", "allowed_scopes": ["orders:read"],
        "access_token_ttl": 900, "refresh_token_ttl": 7 * 86_400, "authorization_code_ttl": null,
    }));
    assert_eq!(
        (at_limits.access_token_ttl, at_limits.refresh_token_ttl, at_limits.authorization_code_ttl),
        (Some(900), Some(604_800), None)
    );

    let plain = valid(serde_json::json!({ "client_name": "x", "allowed_scopes": ["orders:read"] }));
    assert!(plain.allowed_audiences.is_empty() && plain.introspection_audiences.is_empty());
    assert_eq!((plain.access_token_ttl, plain.refresh_token_ttl, plain.authorization_code_ttl), (None, None, None));
    assert!(plain.allows_audience(API, API) && !plain.allows_audience(REPORTS, API));
}

#[test]
fn policy_errors_name_the_field_and_the_value() {
    let base = || serde_json::json!({ "client_name": "x", "allowed_scopes": ["orders:read"] });
    let with = |key: &str, value: serde_json::Value| {
        let mut json = base();
        json[key] = value;
        json
    };
    let cases = [
        (
            with("allowed_audiences", serde_json::json!([API, "https://evil.example"])),
            "allowed_audiences[1]",
            "https://evil.example",
        ),
        (with("allowed_audiences", serde_json::json!([API, API])), "allowed_audiences[1]", "twice"),
        (with("allowed_audiences", serde_json::json!([""])), "allowed_audiences[0]", "JWT_AUDIENCE"),
        (
            with("introspection_audiences", serde_json::json!(["https://auth.example.com"])),
            "introspection_audiences[0]",
            "https://auth.example.com",
        ),
        (with("access_token_ttl", 0.into()), "access_token_ttl", "from 1 up to 900 seconds"),
        (with("access_token_ttl", (-60).into()), "access_token_ttl", "-60"),
        (
            with("access_token_ttl", 901.into()),
            "access_token_ttl",
            "at most 900 seconds, the server's ACCESS_TOKEN_EXPIRY (15m)",
        ),
        (
            with("refresh_token_ttl", (7 * 86_400 + 1).into()),
            "refresh_token_ttl",
            "at most 604800 seconds, the server's REFRESH_TOKEN_EXPIRY (7d)",
        ),
        (with("authorization_code_ttl", 601.into()), "authorization_code_ttl", "OAUTH_AUTHORIZATION_CODE_EXPIRY (10m)"),
        (with("authorization_code_ttl", i64::MIN.into()), "authorization_code_ttl", "not a lifetime"),
    ];
    for (json, field, says) in cases {
        let e = invalid(json.clone());
        assert_eq!(e.field.as_deref(), Some(field), "{json}: {e}");
        assert!(e.to_string().contains(says), "{json}: {e}");
    }

    let public = serde_json::json!({
        "client_name": "SPA", "token_endpoint_auth_method": "none", "redirect_uris": ["https://spa.example/cb"],
        "introspection_audiences": [API],
    });
    let e = invalid(public);
    assert_eq!(e.field.as_deref(), Some("introspection_audiences"), "{e}");
    assert!(e.message.contains("confidential"), "{e}");
    // A public client may still be allowed other audiences.
    valid(serde_json::json!({
        "client_name": "SPA", "token_endpoint_auth_method": "none", "redirect_uris": ["https://spa.example/cb"],
        "allowed_audiences": [REPORTS],
    }));
}

#[test]
fn lifetimes_must_be_json_integers() {
    for body in [
        r#"{"access_token_ttl": 1.5}"#,
        r#"{"access_token_ttl": "900"}"#,
        r#"{"access_token_ttl": 1e3}"#,
        r#"{"access_token_ttl": true}"#,
        r#"{"access_token_ttl": [900]}"#,
        r#"{"access_token_ttl": 99999999999999999999}"#,
    ] {
        let e = parse_json::<ClientInput>(body.as_bytes()).err();
        assert_eq!(e.as_ref().and_then(|e| e.field.as_deref()), Some("access_token_ttl"), "{body}: {e:?}");
        assert!(e.is_some_and(|e| e.message.contains("whole seconds")), "{body}");
    }
    for (body, expected) in [
        (r#"{"refresh_token_ttl": 60}"#, Some(Some(60))),
        (r#"{"refresh_token_ttl": null}"#, Some(None)),
        (r#"{}"#, None),
    ] {
        let parsed = parse_json::<ClientPatch>(body.as_bytes()).map(|p| p.refresh_token_ttl);
        assert_eq!(parsed, Ok(expected), "{body}");
    }
    for body in [r#"{"allowed_audiences": null}"#, r#"{"introspection_audiences": "https://a"}"#] {
        assert!(parse_json::<ClientPatch>(body.as_bytes()).is_err(), "{body}");
    }
}

#[test]
fn a_patch_keeps_what_it_does_not_name() {
    let client = stored(full_registration());
    assert_eq!(
        validate_patch(&client, ClientPatch::default(), &rules()),
        Ok(client.clone()),
        "every field survives the merge"
    );
    let renamed = validate_patch(&client, patch(serde_json::json!({ "client_name": "Renamed" })), &rules());
    assert_eq!(renamed, Ok(Client { client_name: "Renamed".into(), ..client.clone() }));
}

#[test]
fn patches_set_change_and_clear_policies() {
    let client = stored(full_registration());
    let changed = validate_patch(
        &client,
        patch(serde_json::json!({
            "allowed_audiences": [API], "introspection_audiences": [], "access_token_ttl": 600,
            "refresh_token_ttl": null, "authorization_code_ttl": 30,
        })),
        &rules(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(changed.allowed_audiences, [API]);
    assert!(changed.introspection_audiences.is_empty());
    assert_eq!(
        (changed.access_token_ttl, changed.refresh_token_ttl, changed.authorization_code_ttl),
        (Some(600), None, Some(30))
    );

    for (json, field) in [
        (serde_json::json!({ "access_token_ttl": 0 }), "access_token_ttl"),
        (serde_json::json!({ "refresh_token_ttl": 604_801 }), "refresh_token_ttl"),
        (serde_json::json!({ "allowed_audiences": ["https://nope.example"] }), "allowed_audiences[0]"),
    ] {
        let e = validate_patch(&client, patch(json.clone()), &rules()).err();
        assert_eq!(e.and_then(|e| e.field).as_deref(), Some(field), "{json}");
    }

    let public = stored(serde_json::json!({
        "client_name": "SPA", "token_endpoint_auth_method": "none", "redirect_uris": ["https://spa.example/cb"]
    }));
    let e = validate_patch(&public, patch(serde_json::json!({ "introspection_audiences": [API] })), &rules()).err();
    assert_eq!(e.and_then(|e| e.field).as_deref(), Some("introspection_audiences"));
}

/// The server's configuration changed after registration: what the client already has does not
/// block other changes (a suspension above all), and new values meet the new configuration.
#[test]
fn stored_values_outlive_a_configuration_change() {
    let client = stored(full_registration());
    let stricter = Rules {
        scopes_supported: ["openid"].map(String::from).to_vec(),
        scopes: ScopeSet::parse("openid").expect("scopes"),
        audiences: Audiences::new(Some(API), "https://auth.example.com"),
        access_token_ttl: 120,
        refresh_token_ttl: 3_600,
        authorization_code_ttl: 30,
        refresh_family_ttl: 7_200,
    };
    // (The full registration is suspended.)
    let enabled = validate_patch(&client, patch(serde_json::json!({ "status": "active" })), &stricter);
    let enabled = enabled.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(enabled.status, ClientStatus::Active);
    assert_eq!(enabled.access_token_ttl, Some(300), "kept as registered; the server's 120 applies");
    assert_eq!(enabled.access_token_ttl(stricter.access_token_ttl), 120);
    assert_eq!(enabled.allowed_audiences, [REPORTS, API]);

    for (json, field) in [
        (serde_json::json!({ "access_token_ttl": 200 }), "access_token_ttl"),
        (serde_json::json!({ "allowed_audiences": [REPORTS, API, "https://new.example"] }), "allowed_audiences[2]"),
        (serde_json::json!({ "allowed_scopes": ["openid", "orders:read", "profile"] }), "allowed_scopes[2]"),
    ] {
        let e = validate_patch(&client, patch(json.clone()), &stricter).err();
        assert_eq!(e.and_then(|e| e.field).as_deref(), Some(field), "{json}");
    }
    // A new registration gets no such allowance.
    let e = validate_input(input(full_registration()), &stricter).err();
    assert!(e.is_some());
}

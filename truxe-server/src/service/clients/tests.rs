use super::*;
use crate::model::client::{AuthMethod, ClientStatus, GrantType};
use crate::service::tokens::Audiences;

const API: &str = "https://api.example.com";
const REPORTS: &str = "https://reports.example.com";

/// A server with one extra scope, two audiences and the default lifetimes.
fn rules() -> Rules {
    Rules {
        scopes_supported: ["openid", "profile", "email", "offline_access", "orders:read"].map(String::from).to_vec(),
        audiences: Audiences::new(Some(&format!("{API},{REPORTS}")), "https://auth.example.com"),
        access_token_ttl: 900,
        refresh_token_ttl: 7 * 86_400,
        authorization_code_ttl: 600,
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

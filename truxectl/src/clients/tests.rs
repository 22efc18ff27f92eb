use clap::{CommandFactory, Parser};

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn parse(args: &[&str]) -> Result<Command, clap::Error> {
    Cli::try_parse_from(["clients"].iter().chain(args).copied()).map(|cli| cli.command)
}

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn create_flags_become_the_registration_json() {
    let Ok(Command::Create(opts)) = parse(&[
        "create",
        "--name",
        "Web",
        "--redirect-uri",
        "https://a.example/cb",
        "--scope",
        "openid profile",
        "--scope",
        "email",
        "--public",
        "--no-consent",
    ]) else {
        panic!("create parses");
    };
    assert!(!opts.input().is_empty());
    let json = serde_json::to_value(opts.input()).unwrap_or_default();
    assert_eq!(
        json,
        serde_json::json!({
            "client_name": "Web",
            "redirect_uris": ["https://a.example/cb"],
            "allowed_scopes": ["openid", "profile", "email"],
            "token_endpoint_auth_method": "none",
            "require_consent": false,
        })
    );
    let Ok(Command::Create(bare)) = parse(&["create"]) else { panic!("create parses") };
    assert!(bare.input().is_empty());
    assert!(parse(&["create", "--public", "--auth-method", "client_secret_post"]).is_err());
}

#[test]
fn update_flags_become_a_patch() {
    let Ok(Command::Update(opts)) =
        parse(&["update", "cl_x", "--trusted", "false", "--logo-uri", "", "--tos-uri", "https://a.example/tos"])
    else {
        panic!("update parses");
    };
    let json = serde_json::to_value(opts.patch()).unwrap_or_default();
    assert_eq!(json, serde_json::json!({ "trusted": false, "logo_uri": null, "tos_uri": "https://a.example/tos" }));
    let Ok(Command::Update(empty)) = parse(&["update", "cl_x"]) else { panic!("update parses") };
    assert!(empty.patch().is_empty());
}

#[test]
fn grace_durations() {
    let Ok(Command::RotateSecret(opts)) = parse(&["rotate-secret", "cl_x", "--grace", "1h"]) else {
        panic!("rotate-secret parses");
    };
    assert_eq!(opts.grace, Duration::from_secs(3600));
    let Ok(Command::RotateSecret(opts)) = parse(&["rotate-secret", "cl_x"]) else { panic!("parses") };
    assert!(opts.grace.is_zero());
    assert!(parse(&["rotate-secret", "cl_x", "--grace", "soon"]).is_err());
}

#[test]
fn policy_flags() {
    let Ok(Command::Create(opts)) = parse(&[
        "create",
        "--name",
        "Reports",
        "--scope",
        "reports:read",
        "--audience",
        "https://reports.example",
        "--audience",
        "https://billing.example",
        "--introspection-audience",
        "https://reports.example",
        "--access-token-ttl",
        "5m",
        "--refresh-token-ttl",
        "86400",
        "--authorization-code-ttl",
        "0",
    ]) else {
        panic!("create parses");
    };
    let json = serde_json::to_value(opts.input()).unwrap_or_default();
    assert_eq!(
        json,
        serde_json::json!({
            "client_name": "Reports",
            "allowed_scopes": ["reports:read"],
            "allowed_audiences": ["https://reports.example", "https://billing.example"],
            "introspection_audiences": ["https://reports.example"],
            "access_token_ttl": 300,
            "refresh_token_ttl": 86_400,
            // Refused by the server's rules, with their message, not here.
            "authorization_code_ttl": 0,
        })
    );

    // Update: an empty value clears a lifetime (back to the server's) and empties a list.
    let Ok(Command::Update(opts)) =
        parse(&["update", "cl_x", "--access-token-ttl", "", "--audience", "", "--introspection-audience", "https://a"])
    else {
        panic!("update parses");
    };
    let json = serde_json::to_value(opts.patch()).unwrap_or_default();
    assert_eq!(
        json,
        serde_json::json!({ "access_token_ttl": null, "allowed_audiences": [], "introspection_audiences": ["https://a"] })
    );

    for bad in ["-5", "1.5", "soon", "500ms", "99999999999999999999"] {
        let parsed = parse(&["update", "cl_x", &format!("--access-token-ttl={bad}")]);
        let error = parsed.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("--access-token-ttl"), "{bad}: {error}");
    }
}

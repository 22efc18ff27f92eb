//! What `truxectl clients` prints: JSON with `--json`, else text for people.

use truxe_server::service::clients::{ClientView, Page, WithSecret};

use super::redirect::Check;

use crate::Global;

pub(super) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(super) fn output_client(client: &ClientView, global: &Global) -> anyhow::Result<()> {
    if global.json {
        return print_json(client);
    }
    print_client(client);
    Ok(())
}

pub(super) fn output_with_secret(result: &WithSecret, global: &Global, verb: &str) -> anyhow::Result<()> {
    if global.json {
        return print_json(&result.body());
    }
    let client = &result.client;
    println!("{verb} client {} ({})", client.client_id, client.client_name);
    println!();
    print_client(client);
    match &result.client_secret {
        Some(secret) => {
            println!("{:<27} {}", "client_secret", secret.secret());
            println!();
            println!("Store this client secret now: it is shown only this once and cannot be retrieved later.");
        }
        None => {
            println!();
            println!("A public client has no secret; it must use PKCE (S256).");
        }
    }
    Ok(())
}

/// `clients show --redirect-uri`: the client, then the verdict on the presented URI. JSON: the
/// client's fields plus `redirect_uri_check`.
pub(super) fn output_redirect_check(client: &ClientView, check: &Check, global: &Global) -> anyhow::Result<()> {
    if global.json {
        let mut value = serde_json::to_value(client)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("redirect_uri_check".to_string(), serde_json::to_value(check)?);
        }
        return print_json(&value);
    }
    print_client(client);
    println!();
    match (&check.matched, &check.closest) {
        (Some(matched), _) if matched == &check.redirect_uri => {
            println!("redirect_uri {:?} matches the registered {matched:?} exactly", check.redirect_uri);
        }
        (Some(matched), _) => println!(
            "redirect_uri {:?} matches the registered {matched:?} (a loopback IP redirect URI matches on any port)",
            check.redirect_uri
        ),
        (None, closest) => {
            println!("redirect_uri {:?} does NOT match any registered redirect URI", check.redirect_uri);
            if let Some(closest) = closest {
                println!("closest registered: {closest:?}");
            }
            for difference in &check.differences {
                println!("  - {difference}");
            }
            println!(
                "Redirect URIs are compared as exact strings: register the URI the application sends, or fix the application."
            );
        }
    }
    Ok(())
}

/// Each URI on a line of its own, quoted, so that a trailing slash or stray whitespace shows.
fn uri_lines(uris: &[String]) -> String {
    if uris.is_empty() {
        return "-".to_string();
    }
    let indent = format!("\n{:<28}", "");
    uris.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(&indent)
}

fn print_client(c: &ClientView) {
    let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(" ") };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let ttl = |v: Option<i64>| v.map_or_else(|| "- (the server's)".to_string(), |s| format!("{s} s"));
    let rows: [(&str, String); 22] = [
        ("client_id", c.client_id.to_string()),
        ("client_name", c.client_name.clone()),
        ("status", c.status.clone()),
        ("token_endpoint_auth_method", c.token_endpoint_auth_method.clone()),
        ("grant_types", list(&c.grant_types)),
        ("allowed_scopes", list(&c.allowed_scopes)),
        ("redirect_uris", uri_lines(&c.redirect_uris)),
        ("post_logout_redirect_uris", uri_lines(&c.post_logout_redirect_uris)),
        ("require_pkce", c.require_pkce.to_string()),
        ("require_consent", c.require_consent.to_string()),
        ("trusted", c.trusted.to_string()),
        ("client_uri", opt(&c.client_uri)),
        ("logo_uri", opt(&c.logo_uri)),
        ("tos_uri", opt(&c.tos_uri)),
        ("policy_uri", opt(&c.policy_uri)),
        ("allowed_audiences", list(&c.allowed_audiences)),
        ("introspection_audiences", list(&c.introspection_audiences)),
        ("access_token_ttl", ttl(c.access_token_ttl)),
        ("refresh_token_ttl", ttl(c.refresh_token_ttl)),
        ("authorization_code_ttl", ttl(c.authorization_code_ttl)),
        ("created_at", c.created_at.to_string()),
        ("updated_at", c.updated_at.to_string()),
    ];
    for (name, value) in rows {
        println!("{name:<27} {value}");
    }
}

pub(super) fn print_table(page: &Page) {
    if page.clients.is_empty() {
        println!("no clients");
        return;
    }
    let header = ["CLIENT_ID", "STATUS", "AUTH", "GRANTS", "NAME"];
    let rows: Vec<[String; 5]> = page
        .clients
        .iter()
        .map(|c| {
            [
                c.client_id.to_string(),
                c.status.clone(),
                c.token_endpoint_auth_method.clone(),
                c.grant_types.join(","),
                c.client_name.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let text: Vec<String> = cells.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    if let Some(next) = &page.next {
        println!();
        println!("more: truxectl clients list --after {next}");
    }
}

//! `truxectl clients create` on a terminal without flags: asks for each field.

use truxe_server::service::clients::{self as service, ClientInput};

/// Asks for each field on the terminal; each answer is checked by the server's own rules.
pub(super) fn ask(scopes_supported: Option<Vec<String>>) -> anyhow::Result<ClientInput> {
    use dialoguer::{Input, MultiSelect, Select};

    let name: String = Input::new()
        .with_prompt("Client name (shown to users on the consent page)")
        .validate_with(|name: &String| service::check_client_name(name).map(drop))
        .interact_text()?;

    let methods = [
        ("client_secret_basic", "confidential: a server-side app or a service, secret in HTTP Basic"),
        ("client_secret_post", "confidential: secret in the request body"),
        ("none", "public: a single-page or native app, no secret, PKCE"),
    ];
    let method = Select::new()
        .with_prompt("Client authentication (token_endpoint_auth_method)")
        .items(methods.iter().map(|(m, why)| format!("{m:<20} {why}")))
        .default(0)
        .interact()?;
    let (auth_method, _) = methods[method];
    let public = auth_method == "none";

    let grants: &[&str] = if public {
        &["authorization_code", "refresh_token"]
    } else {
        &["authorization_code", "refresh_token", "client_credentials"]
    };
    let grant_types = loop {
        let chosen = MultiSelect::new()
            .with_prompt("Grant types (space toggles, enter accepts)")
            .items(grants.iter())
            .defaults(&[true, true, false][..grants.len()])
            .interact()?;
        if !chosen.is_empty() {
            break chosen.into_iter().map(|i| grants[i].to_string()).collect::<Vec<_>>();
        }
        eprintln!("choose at least one grant type");
    };
    let signs_users_in = grant_types.iter().any(|g| g == "authorization_code");

    let redirect_uris = if signs_users_in {
        let answer: String = Input::new()
            .with_prompt("Redirect URIs (separated by spaces)")
            .validate_with(|text: &String| -> Result<(), String> {
                let uris: Vec<&str> = text.split_whitespace().collect();
                if uris.is_empty() {
                    return Err("at least one redirect URI is needed for authorization_code".into());
                }
                uris.iter().try_for_each(|uri| service::check_redirect_uri(uri).map_err(|e| format!("{uri}: {e}")))
            })
            .interact_text()?;
        answer.split_whitespace().map(str::to_string).collect()
    } else {
        Vec::new()
    };

    let allowed_scopes = match scopes_supported {
        Some(scopes) if !scopes.is_empty() => {
            let defaults: Vec<bool> = scopes
                .iter()
                .map(|s| {
                    signs_users_in
                        && (matches!(s.as_str(), "openid" | "profile" | "email")
                            || (s == "offline_access" && grant_types.iter().any(|g| g == "refresh_token")))
                })
                .collect();
            loop {
                let chosen = MultiSelect::new()
                    .with_prompt("Allowed scopes (space toggles, enter accepts)")
                    .items(scopes.iter())
                    .defaults(&defaults)
                    .interact()?;
                if !chosen.is_empty() {
                    break chosen.into_iter().map(|i| scopes[i].clone()).collect::<Vec<_>>();
                }
                eprintln!("choose at least one scope");
            }
        }
        _ => {
            let answer: String = Input::new()
                .with_prompt("Allowed scopes (separated by spaces)")
                .default("openid profile email".to_string())
                .interact_text()?;
            answer.split_whitespace().map(str::to_string).collect()
        }
    };

    Ok(ClientInput {
        client_name: Some(name),
        redirect_uris: Some(redirect_uris),
        allowed_scopes: Some(allowed_scopes),
        grant_types: Some(grant_types),
        token_endpoint_auth_method: Some(auth_method.to_string()),
        ..ClientInput::default()
    })
}

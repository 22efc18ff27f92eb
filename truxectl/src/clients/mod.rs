//! `truxectl clients …`: register and manage OAuth clients, through a server's admin API
//! (`--url`, [`api`]) or directly on the database ([`database`]), with the server's own
//! validation either way. Here: the flags and the dispatch; [`output`] renders the answers.

mod api;
mod database;
mod output;
mod prompt;
pub mod redirect;
#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use truxe_server::config::{self, BareUnit};
use truxe_server::service::clients::{ClientInput, ClientPatch, ClientView, Page, WithSecret};

use self::output::{output_client, output_with_secret, print_json, print_table};
use crate::{Global, migrate};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Register a client; with no flags on a terminal, asks for each field
    Create(Box<CreateOpts>),
    /// List clients, 50 per page (--after for the next page)
    List(ListOpts),
    /// Show one client; --redirect-uri checks a redirect URI against its registered ones
    /// (exit 1 when it does not match)
    Show(ShowOpts),
    /// Change the fields given; lists (--redirect-uri, --scope …) are replaced as a whole
    Update(Box<UpdateOpts>),
    /// Give a confidential client a new secret (asks first; --yes to skip)
    RotateSecret(RotateOpts),
    /// Suspend a client: it is refused everywhere until enabled again
    Disable(IdOpts),
    /// Make a suspended client active again
    Enable(IdOpts),
    /// Delete a client with its codes, tokens and consents (asks first; --yes to skip)
    Delete(IdOpts),
}

/// Where the clients live: a server's admin API, or the database.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Target {
    /// Work through this server's admin API (e.g. https://auth.example.com) instead of on the
    /// database directly; default: TRUXE_URL
    #[arg(long, value_name = "URL", env = "TRUXE_URL")]
    pub url: Option<String>,
    /// Bearer token of the admin API; default: ADMIN_TOKEN (environment, --env-file, .env), else
    /// the token file in TRUXE_DATA_DIR
    #[arg(long, value_name = "TOKEN", env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// The registration fields `create` and `update` share. A list flag (repeatable) gives the whole
/// list; with `update`, a single empty value (`--audience ''`) empties it, and an empty URI or
/// lifetime removes it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FieldOpts {
    /// Name shown to users on the consent page
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Redirect URI (repeat for several): https, http on 127.0.0.1/[::1]/localhost, or com.example.app:/cb
    #[arg(long = "redirect-uri", value_name = "URI")]
    pub redirect_uris: Vec<String>,
    /// Where users may be sent after signing out (repeat for several)
    #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
    pub post_logout_redirect_uris: Vec<String>,
    /// Scope the client may request (repeat, or several separated by spaces)
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// authorization_code, refresh_token or client_credentials (repeat for several)
    #[arg(long = "grant-type", value_name = "GRANT")]
    pub grant_types: Vec<String>,
    /// client_secret_basic (default), client_secret_post, or none (public; not with update)
    #[arg(long, value_name = "METHOD")]
    pub auth_method: Option<String>,
    #[arg(long, value_name = "URI")]
    pub client_uri: Option<String>,
    #[arg(long, value_name = "URI")]
    pub logo_uri: Option<String>,
    #[arg(long, value_name = "URI")]
    pub tos_uri: Option<String>,
    #[arg(long, value_name = "URI")]
    pub policy_uri: Option<String>,
    /// Audience the client may ask tokens for with `resource`, besides the default (one of
    /// JWT_AUDIENCE; repeat for several)
    #[arg(long = "audience", value_name = "AUDIENCE")]
    pub audiences: Vec<String>,
    /// Audience whose tokens this confidential client may introspect, as their resource server
    /// (one of JWT_AUDIENCE; repeat for several)
    #[arg(long = "introspection-audience", value_name = "AUDIENCE")]
    pub introspection_audiences: Vec<String>,
    /// Access-token lifetime (e.g. 300, 5m), at most the server's ACCESS_TOKEN_EXPIRY
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub access_token_ttl: Option<Ttl>,
    /// Refresh-token lifetime (e.g. 1d), at most the server's REFRESH_TOKEN_EXPIRY
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub refresh_token_ttl: Option<Ttl>,
    /// Authorization-code lifetime (e.g. 60), at most the server's OAUTH_AUTHORIZATION_CODE_EXPIRY
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub authorization_code_ttl: Option<Ttl>,
}

/// A lifetime flag in whole seconds; `None` (an empty value): the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(Option<i64>);

fn parse_ttl(value: &str) -> Result<Ttl, String> {
    if value.trim().is_empty() {
        return Ok(Ttl(None));
    }
    let duration = config::parse_duration(value, BareUnit::Seconds)?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("{value:?} is not a whole number of seconds"));
    }
    let seconds = i64::try_from(duration.as_secs()).map_err(|_| format!("{value:?} is too long"))?;
    Ok(Ttl(Some(seconds)))
}

impl FieldOpts {
    fn input(&self) -> ClientInput {
        // No value: not given; one empty value: an empty list.
        let list = |values: &[String]| match values {
            [] => None,
            [only] if only.trim().is_empty() => Some(Vec::new()),
            values => Some(values.to_vec()),
        };
        // An empty value removes it (in a registration, the same as not giving it).
        let uri = |value: &Option<String>| value.as_ref().map(|v| Some(v.clone()).filter(|v| !v.is_empty()));
        let ttl = |value: Option<Ttl>| value.map(|Ttl(seconds)| seconds);
        ClientInput {
            client_name: self.name.clone(),
            redirect_uris: list(&self.redirect_uris),
            post_logout_redirect_uris: list(&self.post_logout_redirect_uris),
            allowed_scopes: list(&split_scopes(&self.scopes)),
            grant_types: list(&self.grant_types),
            token_endpoint_auth_method: self.auth_method.clone(),
            client_uri: uri(&self.client_uri),
            logo_uri: uri(&self.logo_uri),
            tos_uri: uri(&self.tos_uri),
            policy_uri: uri(&self.policy_uri),
            allowed_audiences: list(&self.audiences),
            introspection_audiences: list(&self.introspection_audiences),
            access_token_ttl: ttl(self.access_token_ttl),
            refresh_token_ttl: ttl(self.refresh_token_ttl),
            authorization_code_ttl: ttl(self.authorization_code_ttl),
            ..ClientInput::default()
        }
    }
}

/// `--scope "openid profile" --scope email` is three scopes.
fn split_scopes(values: &[String]) -> Vec<String> {
    let scopes: Vec<String> = values.iter().flat_map(|v| v.split_whitespace()).map(str::to_string).collect();
    // Keep a lone empty value (an empty list) as it was given.
    if scopes.is_empty() { values.to_vec() } else { scopes }
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct CreateOpts {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub fields: FieldOpts,
    /// A public client (single-page or native app): no secret, PKCE required
    #[arg(long, conflicts_with = "auth_method")]
    pub public: bool,
    /// Trusted first-party client
    #[arg(long)]
    pub trusted: bool,
    /// Do not ask users for consent
    #[arg(long)]
    pub no_consent: bool,
    /// Do not require PKCE (confidential clients only)
    #[arg(long)]
    pub no_pkce: bool,
}

impl CreateOpts {
    fn input(&self) -> ClientInput {
        let fields = self.fields.input();
        ClientInput {
            token_endpoint_auth_method: if self.public {
                Some("none".into())
            } else {
                fields.token_endpoint_auth_method
            },
            require_pkce: self.no_pkce.then_some(false),
            require_consent: self.no_consent.then_some(false),
            trusted: self.trusted.then_some(true),
            ..fields
        }
    }
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct UpdateOpts {
    #[command(flatten)]
    pub target: Target,
    pub client_id: String,
    #[command(flatten)]
    pub fields: FieldOpts,
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub require_pkce: Option<bool>,
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub require_consent: Option<bool>,
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub trusted: Option<bool>,
    /// active, suspended or revoked (revoked is final)
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
}

impl UpdateOpts {
    fn patch(&self) -> ClientPatch {
        ClientPatch {
            require_pkce: self.require_pkce,
            require_consent: self.require_consent,
            trusted: self.trusted,
            status: self.status.clone(),
            ..self.fields.input()
        }
    }
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ListOpts {
    #[command(flatten)]
    pub target: Target,
    /// Start after this client_id (the `next` of the previous page)
    #[arg(long, value_name = "CLIENT_ID")]
    pub after: Option<String>,
    /// Clients per page (1 to 200)
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=200))]
    pub limit: i64,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct IdOpts {
    #[command(flatten)]
    pub target: Target,
    pub client_id: String,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ShowOpts {
    #[command(flatten)]
    pub target: Target,
    pub client_id: String,
    /// Check this redirect URI as the authorization endpoint would (the `redirect_uri_mismatch`
    /// tool): does it match a registered one exactly, and if not, which is closest and how it
    /// differs (trailing slash, scheme, host, port, case, query)
    #[arg(long, value_name = "URI")]
    pub redirect_uri: Option<String>,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct RotateOpts {
    #[command(flatten)]
    pub target: Target,
    pub client_id: String,
    /// How long the current secret keeps working beside the new one (e.g. 1h, 7d; at most 30d)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_grace)]
    pub grace: Duration,
}

fn parse_grace(value: &str) -> Result<Duration, String> {
    config::parse_duration(value, BareUnit::Seconds)
}

/// The operations, the same through the admin API and on the database.
trait Clients {
    /// The scopes clients may be registered with, for the interactive prompt.
    fn scopes_supported(&mut self) -> Option<Vec<String>>;
    fn create(&mut self, input: ClientInput) -> anyhow::Result<WithSecret>;
    fn list(&mut self, after: Option<&str>, limit: i64) -> anyhow::Result<Page>;
    fn get(&mut self, client_id: &str) -> anyhow::Result<ClientView>;
    fn update(&mut self, client_id: &str, patch: ClientPatch) -> anyhow::Result<ClientView>;
    fn delete(&mut self, client_id: &str) -> anyhow::Result<()>;
    fn rotate_secret(&mut self, client_id: &str, grace: Duration) -> anyhow::Result<WithSecret>;
}

/// The admin API when a URL is given (`--url`, `TRUXE_URL`), else the database.
fn open(target: &Target, global: &Global) -> anyhow::Result<Box<dyn Clients>> {
    let lookup = config::layered_lookup(global.env_file.as_deref())?;
    let url = target.url.clone().or_else(|| lookup("TRUXE_URL")).filter(|u| !u.trim().is_empty());
    match url {
        Some(url) => {
            if global.database_url.is_some() {
                bail!("give either --url (the admin API) or --database-url (the database directly), not both");
            }
            let token = api::admin_token(target, &lookup)?;
            Ok(Box::new(api::Api::new(&url, token)?))
        }
        None => Ok(Box::new(database::Database::open(global)?)),
    }
}

pub fn run(command: Command, global: &Global) -> anyhow::Result<()> {
    match command {
        Command::Create(opts) => create(&opts, global),
        Command::List(opts) => {
            let page = open(&opts.target, global)?.list(opts.after.as_deref(), opts.limit)?;
            if global.json {
                print_json(&page)
            } else {
                print_table(&page);
                Ok(())
            }
        }
        Command::Show(opts) => {
            let client = open(&opts.target, global)?.get(&opts.client_id)?;
            let Some(presented) = &opts.redirect_uri else {
                return output_client(&client, global);
            };
            let check = redirect::check(&client.redirect_uris, presented);
            output::output_redirect_check(&client, &check, global)?;
            if check.matches {
                Ok(())
            } else {
                Err(crate::exit::check_failed(format!(
                    "redirect_uri {presented:?} is not registered for {}: the authorization endpoint refuses it \
                     (redirect_uri_mismatch)",
                    client.client_id
                )))
            }
        }
        Command::Update(opts) => {
            let patch = opts.patch();
            if patch.is_empty() {
                bail!("nothing to update: give at least one field (see truxectl clients update --help)");
            }
            let client = open(&opts.target, global)?.update(&opts.client_id, patch)?;
            output_client(&client, global)
        }
        Command::Disable(opts) => set_status(opts, "suspended", global),
        Command::Enable(opts) => set_status(opts, "active", global),
        Command::RotateSecret(opts) => {
            let mut clients = open(&opts.target, global)?;
            let client = clients.get(&opts.client_id)?;
            let when = if opts.grace.is_zero() {
                "stops working at once".to_string()
            } else {
                format!("keeps working for {}", config::format_duration(opts.grace))
            };
            migrate::confirm(
                global,
                &format!(
                    "Give client {} ({}) a new secret? The current one {when}.",
                    client.client_id, client.client_name
                ),
            )?;
            let rotated = clients.rotate_secret(&opts.client_id, opts.grace)?;
            output_with_secret(&rotated, global, "New secret for")
        }
        Command::Delete(opts) => {
            let mut clients = open(&opts.target, global)?;
            let client = clients.get(&opts.client_id)?;
            migrate::confirm(
                global,
                &format!(
                    "Delete client {} ({}) with its codes, tokens and consents? This cannot be undone.",
                    client.client_id, client.client_name
                ),
            )?;
            clients.delete(&opts.client_id)?;
            if global.json {
                print_json(&serde_json::json!({ "deleted": client.client_id }))
            } else {
                println!("deleted client {} ({})", client.client_id, client.client_name);
                Ok(())
            }
        }
    }
}

fn set_status(opts: IdOpts, status: &str, global: &Global) -> anyhow::Result<()> {
    let patch = ClientPatch { status: Some(status.to_string()), ..ClientPatch::default() };
    let client = open(&opts.target, global)?.update(&opts.client_id, patch)?;
    if global.json {
        print_json(&client)
    } else {
        println!("client {} ({}) is {}", client.client_id, client.client_name, client.status);
        Ok(())
    }
}

fn create(opts: &CreateOpts, global: &Global) -> anyhow::Result<()> {
    let mut clients = open(&opts.target, global)?;
    let mut input = opts.input();
    if input.is_empty() {
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            bail!(
                "no terminal to ask on: give the client's fields as flags, e.g.\n  \
                 truxectl clients create --name 'My App' --redirect-uri https://app.example.com/callback"
            );
        }
        input = prompt::ask(clients.scopes_supported())?;
    }
    let created = clients.create(input)?;
    output_with_secret(&created, global, "Registered")
}

//! `truxectl clients …`: register and manage OAuth clients, through a server's admin API
//! (`--url`) or directly on the database, with the server's own validation either way.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use truxe_server::config::{self, BareUnit, Config};
use truxe_server::model::client::is_plausible_client_id;
use truxe_server::model::request::RequestMeta;
use truxe_server::secret::Secret;
use truxe_server::service::clients::{
    self as service, ClientError, ClientInput, ClientPatch, ClientView, Context, Page, Rules, WithSecret,
};
use truxe_server::store::{self, PooledConnection, migrations, server_secrets};

use crate::{Global, db, migrate};

/// Audit actor for changes made on the database directly.
const ACTOR: &str = "cli";

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Register a client; with no flags on a terminal, asks for each field
    Create(Box<CreateOpts>),
    /// List clients, 50 per page (--after for the next page)
    List(ListOpts),
    /// Show one client
    Show(IdOpts),
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

#[derive(clap::Args, Debug, Clone, Default)]
pub struct CreateOpts {
    #[command(flatten)]
    pub target: Target,
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
    /// client_secret_basic (default), client_secret_post, or none (public)
    #[arg(long, value_name = "METHOD", conflicts_with = "public")]
    pub auth_method: Option<String>,
    /// A public client (single-page or native app): no secret, PKCE required
    #[arg(long)]
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
    #[arg(long, value_name = "URI")]
    pub client_uri: Option<String>,
    #[arg(long, value_name = "URI")]
    pub logo_uri: Option<String>,
    #[arg(long, value_name = "URI")]
    pub tos_uri: Option<String>,
    #[arg(long, value_name = "URI")]
    pub policy_uri: Option<String>,
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
pub struct UpdateOpts {
    #[command(flatten)]
    pub target: Target,
    pub client_id: String,
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Replaces every redirect URI (repeat for several)
    #[arg(long = "redirect-uri", value_name = "URI")]
    pub redirect_uris: Vec<String>,
    /// Replaces every post-logout redirect URI (repeat for several)
    #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
    pub post_logout_redirect_uris: Vec<String>,
    /// Replaces the allowed scopes (repeat, or several separated by spaces)
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Replaces the grant types (repeat for several)
    #[arg(long = "grant-type", value_name = "GRANT")]
    pub grant_types: Vec<String>,
    /// client_secret_basic or client_secret_post (a client cannot change between public and confidential)
    #[arg(long, value_name = "METHOD")]
    pub auth_method: Option<String>,
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub require_pkce: Option<bool>,
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub require_consent: Option<bool>,
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub trusted: Option<bool>,
    /// An empty value removes it
    #[arg(long, value_name = "URI")]
    pub client_uri: Option<String>,
    /// An empty value removes it
    #[arg(long, value_name = "URI")]
    pub logo_uri: Option<String>,
    /// An empty value removes it
    #[arg(long, value_name = "URI")]
    pub tos_uri: Option<String>,
    /// An empty value removes it
    #[arg(long, value_name = "URI")]
    pub policy_uri: Option<String>,
    /// active, suspended or revoked (revoked is final)
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
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

pub fn run(command: Command, global: &Global) -> anyhow::Result<()> {
    match command {
        Command::Create(opts) => create(opts, global),
        Command::List(opts) => {
            let page = Backend::open(&opts.target, global)?.list(opts.after.as_deref(), opts.limit)?;
            if global.json {
                print_json(&page)
            } else {
                print_table(&page);
                Ok(())
            }
        }
        Command::Show(opts) => {
            let client = Backend::open(&opts.target, global)?.get(&opts.client_id)?;
            output_client(&client, global)
        }
        Command::Update(opts) => {
            let patch = opts.patch();
            if patch.is_empty() {
                bail!("nothing to update: give at least one field (see truxectl clients update --help)");
            }
            let client = Backend::open(&opts.target, global)?.update(&opts.client_id, patch)?;
            output_client(&client, global)
        }
        Command::Disable(opts) => set_status(opts, "suspended", global),
        Command::Enable(opts) => set_status(opts, "active", global),
        Command::RotateSecret(opts) => {
            let mut backend = Backend::open(&opts.target, global)?;
            let client = backend.get(&opts.client_id)?;
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
            let rotated = backend.rotate_secret(&opts.client_id, opts.grace)?;
            output_with_secret(&rotated, global, "New secret for")
        }
        Command::Delete(opts) => {
            let mut backend = Backend::open(&opts.target, global)?;
            let client = backend.get(&opts.client_id)?;
            migrate::confirm(
                global,
                &format!(
                    "Delete client {} ({}) with its codes, tokens and consents? This cannot be undone.",
                    client.client_id, client.client_name
                ),
            )?;
            backend.delete(&opts.client_id)?;
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
    let client = Backend::open(&opts.target, global)?.update(&opts.client_id, patch)?;
    if global.json {
        print_json(&client)
    } else {
        println!("client {} ({}) is {}", client.client_id, client.client_name, client.status);
        Ok(())
    }
}

fn create(opts: Box<CreateOpts>, global: &Global) -> anyhow::Result<()> {
    let mut backend = Backend::open(&opts.target, global)?;
    let input = if opts.has_fields() {
        opts.input()
    } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let scopes = backend.scopes_supported();
        prompt_input(scopes)?
    } else {
        bail!(
            "no terminal to ask on: give the client's fields as flags, e.g.\n  \
             truxectl clients create --name 'My App' --redirect-uri https://app.example.com/callback"
        );
    };
    let created = backend.create(input)?;
    output_with_secret(&created, global, "Registered")
}

impl CreateOpts {
    fn has_fields(&self) -> bool {
        self.name.is_some()
            || !self.redirect_uris.is_empty()
            || !self.post_logout_redirect_uris.is_empty()
            || !self.scopes.is_empty()
            || !self.grant_types.is_empty()
            || self.auth_method.is_some()
            || self.public
            || self.trusted
            || self.no_consent
            || self.no_pkce
            || self.client_uri.is_some()
            || self.logo_uri.is_some()
            || self.tos_uri.is_some()
            || self.policy_uri.is_some()
    }

    fn input(&self) -> ClientInput {
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        ClientInput {
            client_name: self.name.clone(),
            redirect_uris: non_empty(&self.redirect_uris),
            post_logout_redirect_uris: non_empty(&self.post_logout_redirect_uris),
            allowed_scopes: non_empty(&split_scopes(&self.scopes)),
            grant_types: non_empty(&self.grant_types),
            token_endpoint_auth_method: if self.public { Some("none".into()) } else { self.auth_method.clone() },
            require_pkce: self.no_pkce.then_some(false),
            require_consent: self.no_consent.then_some(false),
            trusted: self.trusted.then_some(true),
            client_uri: self.client_uri.clone().map(Some),
            logo_uri: self.logo_uri.clone().map(Some),
            tos_uri: self.tos_uri.clone().map(Some),
            policy_uri: self.policy_uri.clone().map(Some),
            ..ClientInput::default()
        }
    }
}

impl UpdateOpts {
    fn patch(&self) -> ClientPatch {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        // An empty value clears an optional URI.
        let uri = |v: &Option<String>| v.as_ref().map(|s| Some(s.clone()).filter(|s| !s.is_empty()));
        ClientPatch {
            client_name: self.name.clone(),
            redirect_uris: list(&self.redirect_uris),
            post_logout_redirect_uris: list(&self.post_logout_redirect_uris),
            allowed_scopes: list(&split_scopes(&self.scopes)),
            grant_types: list(&self.grant_types),
            token_endpoint_auth_method: self.auth_method.clone(),
            require_pkce: self.require_pkce,
            require_consent: self.require_consent,
            trusted: self.trusted,
            client_uri: uri(&self.client_uri),
            logo_uri: uri(&self.logo_uri),
            tos_uri: uri(&self.tos_uri),
            policy_uri: uri(&self.policy_uri),
            status: self.status.clone(),
            ..ClientPatch::default()
        }
    }
}

/// `--scope "openid profile" --scope email` is three scopes.
fn split_scopes(values: &[String]) -> Vec<String> {
    values.iter().flat_map(|v| v.split_whitespace()).map(str::to_string).collect()
}

/// Asks for each field on the terminal; each answer is checked by the server's own rules.
fn prompt_input(scopes_supported: Option<Vec<String>>) -> anyhow::Result<ClientInput> {
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

enum Backend {
    Api(Api),
    Database(Box<Database>),
}

impl Backend {
    fn open(target: &Target, global: &Global) -> anyhow::Result<Self> {
        let lookup = config::layered_lookup(global.env_file.as_deref())?;
        let url = target.url.clone().or_else(|| lookup("TRUXE_URL")).filter(|u| !u.trim().is_empty());
        match url {
            Some(url) => {
                if global.database_url.is_some() {
                    bail!("give either --url (the admin API) or --database-url (the database directly), not both");
                }
                let token = admin_token(target, &lookup)?;
                Ok(Backend::Api(Api::new(&url, token)?))
            }
            None => Ok(Backend::Database(Box::new(Database::open(global)?))),
        }
    }

    /// The scopes clients may be registered with, for the interactive prompt.
    fn scopes_supported(&mut self) -> Option<Vec<String>> {
        match self {
            Backend::Api(api) => api.scopes_supported(),
            Backend::Database(db) => Some(db.rules.scopes_supported.clone()),
        }
    }

    fn create(&mut self, input: ClientInput) -> anyhow::Result<WithSecret> {
        match self {
            Backend::Api(api) => api.with_secret(reqwest::Method::POST, "", Some(serde_json::to_value(input)?)),
            Backend::Database(db) => db.with(|conn, ctx| service::create(conn, ctx, input), "", true),
        }
    }

    fn list(&mut self, after: Option<&str>, limit: i64) -> anyhow::Result<Page> {
        match self {
            Backend::Api(api) => {
                let mut query = format!("?limit={limit}");
                if let Some(after) = after {
                    if !is_plausible_client_id(after) {
                        bail!("--after: {after:?} is not a client_id (cl_…)");
                    }
                    query.push_str(&format!("&after={after}"));
                }
                api.json(reqwest::Method::GET, &query, None, "")
            }
            Backend::Database(db) => {
                db.with(|conn, _| service::list(conn, after, Some(limit)), after.unwrap_or_default(), false)
            }
        }
    }

    fn get(&mut self, client_id: &str) -> anyhow::Result<ClientView> {
        match self {
            Backend::Api(api) => api.json(reqwest::Method::GET, &api.client_path(client_id)?, None, client_id),
            Backend::Database(db) => db.with(|conn, _| service::get(conn, client_id), client_id, false),
        }
    }

    fn update(&mut self, client_id: &str, patch: ClientPatch) -> anyhow::Result<ClientView> {
        match self {
            Backend::Api(api) => {
                let path = api.client_path(client_id)?;
                api.json(reqwest::Method::PATCH, &path, Some(serde_json::to_value(patch)?), client_id)
            }
            Backend::Database(db) => {
                db.with(|conn, ctx| service::update(conn, ctx, client_id, patch), client_id, false)
            }
        }
    }

    fn delete(&mut self, client_id: &str) -> anyhow::Result<()> {
        match self {
            Backend::Api(api) => {
                let path = api.client_path(client_id)?;
                api.send(reqwest::Method::DELETE, &path, None, client_id).map(drop)
            }
            Backend::Database(db) => db.with(|conn, ctx| service::delete(conn, ctx, client_id), client_id, false),
        }
    }

    fn rotate_secret(&mut self, client_id: &str, grace: Duration) -> anyhow::Result<WithSecret> {
        match self {
            Backend::Api(api) => {
                let path = format!("{}/regenerate-secret", api.client_path(client_id)?);
                api.with_secret(
                    reqwest::Method::POST,
                    &path,
                    Some(serde_json::json!({ "grace_seconds": grace.as_secs() })),
                )
            }
            Backend::Database(db) => {
                db.with(|conn, ctx| service::regenerate_secret(conn, ctx, client_id, grace), client_id, true)
            }
        }
    }
}

/// `--admin-token`/`ADMIN_TOKEN`, else `ADMIN_TOKEN` or `ADMIN_TOKEN_FILE` from the server's
/// configuration files, else the token the embedded default generated in its data directory.
fn admin_token(target: &Target, lookup: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Secret<String>> {
    let set = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if let Some(token) = set(target.admin_token.clone()).or_else(|| set(lookup("ADMIN_TOKEN"))) {
        return Ok(Secret::new(token));
    }
    if let Some(path) = set(lookup("ADMIN_TOKEN_FILE")) {
        let token = std::fs::read_to_string(&path).with_context(|| format!("ADMIN_TOKEN_FILE: cannot read {path}"))?;
        return set(Some(token)).map(Secret::new).with_context(|| format!("ADMIN_TOKEN_FILE: {path} is empty"));
    }
    let data_dir = set(lookup("TRUXE_DATA_DIR")).map_or_else(|| PathBuf::from("./truxe-data"), PathBuf::from);
    let path = data_dir.join(truxe_server::datadir::ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) => set(Some(token)).map(Secret::new).with_context(|| format!("{} is empty", path.display())),
        Err(_) => bail!(
            "no admin token for --url: pass --admin-token or set ADMIN_TOKEN (the embedded default keeps its \
             generated token in {})",
            path.display()
        ),
    }
}

struct Api {
    base: String,
    token: Secret<String>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// An error answer of the admin API.
#[derive(serde::Deserialize)]
struct ApiError {
    error: String,
    error_description: Option<String>,
}

impl Api {
    fn new(url: &str, token: Secret<String>) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url.trim()).with_context(|| format!("--url: {url:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            bail!("--url: {url:?} is not an http(s) URL (example: https://auth.example.com)");
        }
        let base = parsed.as_str().trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Api { base, token, http, runtime })
    }

    /// Path below `/oauth-provider/clients` for one client; ids that cannot exist are refused
    /// here, so nothing unexpected ends up in the URL.
    fn client_path(&self, client_id: &str) -> anyhow::Result<String> {
        if !is_plausible_client_id(client_id) {
            bail!("no client with client_id {client_id:?}");
        }
        Ok(format!("/{client_id}"))
    }

    /// Sends a request below `/oauth-provider/clients`; a non-2xx answer becomes an error.
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        client_id: &str,
    ) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}/oauth-provider/clients{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(self.token.secret());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, bytes) = self
            .runtime
            .block_on(async {
                let response = request.send().await?;
                let status = response.status();
                Ok::<_, reqwest::Error>((status, response.bytes().await?))
            })
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let error: Option<ApiError> = serde_json::from_slice(&bytes).ok();
        match (status.as_u16(), error) {
            (401, _) => bail!("{} refused the admin token (401): check --admin-token / ADMIN_TOKEN", self.base),
            (404, Some(e)) if e.error == "not_found" && !client_id.is_empty() => {
                bail!("no client with client_id {client_id:?}")
            }
            (_, Some(ApiError { error, error_description: Some(description) })) => {
                bail!("{description} ({error}, HTTP {})", status.as_u16())
            }
            (_, Some(ApiError { error, .. })) => bail!("the server answered {status}: {error}"),
            (_, None) => bail!("the server at {} answered {status} (is it a Truxe server?)", self.base),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        client_id: &str,
    ) -> anyhow::Result<T> {
        let bytes = self.send(method, path, body, client_id)?;
        serde_json::from_slice(&bytes).context("the admin API answered with unexpected JSON")
    }

    fn with_secret(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<WithSecret> {
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(flatten)]
            client: ClientView,
            client_secret: Option<String>,
        }
        let client_id = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        let answer: Answer = self.json(method, path, body, client_id)?;
        Ok(WithSecret { client: answer.client, client_secret: answer.client_secret.map(Secret::new) })
    }

    /// From the discovery document; `None` when the server does not publish one.
    fn scopes_supported(&self) -> Option<Vec<String>> {
        let url = format!("{}/.well-known/openid-configuration", self.base);
        self.runtime
            .block_on(async {
                let response = self.http.get(&url).send().await.ok()?.error_for_status().ok()?;
                response.json::<serde_json::Value>().await.ok()
            })
            .and_then(|doc| serde_json::from_value(doc.get("scopes_supported")?.clone()).ok())
    }
}

struct Database {
    conn: PooledConnection,
    target: String,
    rules: Rules,
}

impl Database {
    fn open(global: &Global) -> anyhow::Result<Self> {
        let rules = Rules::from_config(&server_config(global)?);
        let database = db::database_config(global)?;
        let target = database.url.redacted();
        let mut conn = store::connect(&database)?.get().with_context(|| format!("cannot open {target}"))?;
        let pending = migrations::pending(&mut conn).with_context(|| format!("reading {target}"))?;
        if !pending.is_empty() {
            bail!(
                "{target} has {} pending migration(s): run `truxectl migrate` first (or start the embedded \
                 server once, which migrates itself)",
                pending.len()
            );
        }
        Ok(Database { conn, target, rules })
    }

    /// Runs one service operation; `needs_key` loads (or creates) the shared HMAC key first.
    fn with<T>(
        &mut self,
        work: impl FnOnce(&mut store::AnyConnection, &Context<'_>) -> Result<T, ClientError>,
        client_id: &str,
        needs_key: bool,
    ) -> anyhow::Result<T> {
        let now = store::unix_now();
        let key = if needs_key {
            server_secrets::load_or_create(&mut self.conn, server_secrets::CLIENT_SECRET_HMAC_KEY, now)
                .with_context(|| format!("loading the client secret key from {}", self.target))?
        } else {
            Secret::new(Vec::new())
        };
        let ctx = Context {
            rules: &self.rules,
            secret_key: key.secret(),
            now,
            actor: ACTOR,
            request: &RequestMeta::default(),
        };
        match work(&mut self.conn, &ctx) {
            Ok(value) => Ok(value),
            Err(ClientError::NotFound) => bail!("no client with client_id {client_id:?}"),
            Err(ClientError::Invalid(e)) => bail!("{e}"),
            Err(ClientError::Store(e)) => Err(anyhow::Error::new(e).context(format!("on {}", self.target))),
        }
    }
}

/// The server's configuration (for `TRUXE_SCOPES`), read from the same sources as the server;
/// production-only requirements are the server's business.
fn server_config(global: &Global) -> anyhow::Result<Config> {
    let lookup = config::layered_lookup(global.env_file.as_deref())?;
    Ok(Config::from_lookup(&|name: &str| match name {
        "NODE_ENV" | "TRUXE_ENV" => None,
        _ => lookup(name),
    })?)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn output_client(client: &ClientView, global: &Global) -> anyhow::Result<()> {
    if global.json {
        return print_json(client);
    }
    print_client(client);
    Ok(())
}

fn output_with_secret(result: &WithSecret, global: &Global, verb: &str) -> anyhow::Result<()> {
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

fn print_client(c: &ClientView) {
    let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(" ") };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let rows: [(&str, String); 17] = [
        ("client_id", c.client_id.clone()),
        ("client_name", c.client_name.clone()),
        ("status", c.status.clone()),
        ("token_endpoint_auth_method", c.token_endpoint_auth_method.clone()),
        ("grant_types", list(&c.grant_types)),
        ("allowed_scopes", list(&c.allowed_scopes)),
        ("redirect_uris", list(&c.redirect_uris)),
        ("post_logout_redirect_uris", list(&c.post_logout_redirect_uris)),
        ("require_pkce", c.require_pkce.to_string()),
        ("require_consent", c.require_consent.to_string()),
        ("trusted", c.trusted.to_string()),
        ("client_uri", opt(&c.client_uri)),
        ("logo_uri", opt(&c.logo_uri)),
        ("tos_uri", opt(&c.tos_uri)),
        ("policy_uri", opt(&c.policy_uri)),
        ("created_at", c.created_at.to_string()),
        ("updated_at", c.updated_at.to_string()),
    ];
    for (name, value) in rows {
        println!("{name:<27} {value}");
    }
}

fn print_table(page: &Page) {
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
                c.client_id.clone(),
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

#[cfg(test)]
mod tests {
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
        assert!(opts.has_fields());
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
        assert!(!bare.has_fields());
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
}

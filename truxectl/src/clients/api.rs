//! The clients through a running server's admin API (`--url`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use truxe_server::model::client::is_plausible_client_id;
use truxe_server::secret::Secret;
use truxe_server::service::clients::{ClientInput, ClientPatch, ClientView, Page, WithSecret};

use super::{Clients, Target};

/// `--admin-token`/`ADMIN_TOKEN`, else `ADMIN_TOKEN` or `ADMIN_TOKEN_FILE` from the server's
/// configuration files, else the token the embedded default generated in its data directory.
pub(super) fn admin_token(target: &Target, lookup: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Secret<String>> {
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

pub(super) struct Api {
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
    pub(super) fn new(url: &str, token: Secret<String>) -> anyhow::Result<Self> {
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
    fn discovered_scopes(&self) -> Option<Vec<String>> {
        let url = format!("{}/.well-known/openid-configuration", self.base);
        self.runtime
            .block_on(async {
                let response = self.http.get(&url).send().await.ok()?.error_for_status().ok()?;
                response.json::<serde_json::Value>().await.ok()
            })
            .and_then(|doc| serde_json::from_value(doc.get("scopes_supported")?.clone()).ok())
    }
}

impl Clients for Api {
    fn scopes_supported(&mut self) -> Option<Vec<String>> {
        self.discovered_scopes()
    }

    fn create(&mut self, input: ClientInput) -> anyhow::Result<WithSecret> {
        self.with_secret(reqwest::Method::POST, "", Some(serde_json::to_value(input)?))
    }

    fn list(&mut self, after: Option<&str>, limit: i64) -> anyhow::Result<Page> {
        let mut query = format!("?limit={limit}");
        if let Some(after) = after {
            if !is_plausible_client_id(after) {
                bail!("--after: {after:?} is not a client_id (cl_…)");
            }
            query.push_str(&format!("&after={after}"));
        }
        self.json(reqwest::Method::GET, &query, None, "")
    }

    fn get(&mut self, client_id: &str) -> anyhow::Result<ClientView> {
        self.json(reqwest::Method::GET, &self.client_path(client_id)?, None, client_id)
    }

    fn update(&mut self, client_id: &str, patch: ClientPatch) -> anyhow::Result<ClientView> {
        let path = self.client_path(client_id)?;
        self.json(reqwest::Method::PATCH, &path, Some(serde_json::to_value(patch)?), client_id)
    }

    fn delete(&mut self, client_id: &str) -> anyhow::Result<()> {
        let path = self.client_path(client_id)?;
        self.send(reqwest::Method::DELETE, &path, None, client_id).map(drop)
    }

    fn rotate_secret(&mut self, client_id: &str, grace: Duration) -> anyhow::Result<WithSecret> {
        let path = format!("{}/regenerate-secret", self.client_path(client_id)?);
        self.with_secret(reqwest::Method::POST, &path, Some(serde_json::json!({ "grace_seconds": grace.as_secs() })))
    }
}

//! The limits the configuration sets (SPEC "Rate limits"), and which of them a request meets.

use std::time::Duration;

use crate::config::RateLimitConfig;

/// One token bucket (GCRA): at most `burst` requests at once, refilled by one every `interval`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The name in the `RateLimit`/`RateLimit-Policy` headers and in the Redis key.
    pub name: String,
    pub burst: u32,
    pub interval: Duration,
}

impl Policy {
    /// `max` requests per `window`, all of them usable at once.
    pub fn per_window(name: &str, max: u32, window: Duration) -> Self {
        let max = max.max(1);
        Policy { name: name.to_string(), burst: max, interval: (window / max).max(Duration::from_micros(1)) }
    }

    /// `per_minute` sustained, `burst` at once (`RATE_LIMIT_ENDPOINTS`).
    pub fn per_minute(name: &str, per_minute: u32, burst: u32) -> Self {
        Policy {
            name: name.to_string(),
            burst: burst.max(1),
            interval: (Duration::from_secs(60) / per_minute.max(1)).max(Duration::from_micros(1)),
        }
    }

    /// How long an empty bucket takes to fill: the window `w` of the policy header.
    pub fn window(&self) -> Duration {
        self.interval * self.burst
    }
}

/// Index of a policy in [`Policies`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyId(pub usize);

/// The endpoints with a limit of their own, as named in `RATE_LIMIT_ENDPOINTS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Authorize,
    Token,
    Userinfo,
    Introspect,
    Revoke,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] =
        [Endpoint::Authorize, Endpoint::Token, Endpoint::Userinfo, Endpoint::Introspect, Endpoint::Revoke];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Authorize => "authorize",
            Endpoint::Token => "token",
            Endpoint::Userinfo => "userinfo",
            Endpoint::Introspect => "introspect",
            Endpoint::Revoke => "revoke",
        }
    }
}

/// How a refusal is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// OAuth JSON endpoints (token, introspect, revoke, userinfo).
    OAuth,
    /// Pages a browser shows (`/login*`, `/logout`, the authorization endpoint, `/`).
    Page,
    /// Any other JSON (admin API, discovery, JWKS, unknown paths).
    Json,
}

/// What a request is limited by: its kind, its endpoint (if it has a limit of its own) and
/// whether it is one of the OAuth requests of `OAUTH_RATE_LIMIT_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteKind,
    pub endpoint: Option<Endpoint>,
    pub oauth: bool,
}

/// `None` for the health checks and `/metrics`, which load balancers and monitoring poll and
/// nothing limits. The OAuth set
/// is the five protocol endpoints and the sign-in form posts (`POST /login*`): every request
/// that authenticates someone or hands out a credential. Discovery and the JWKS are public,
/// cacheable documents: only the global limit applies to them.
pub fn classify(method: &str, path: &str) -> Option<Route> {
    if path == "/health" || path.starts_with("/health/") || path == "/metrics" {
        return None;
    }
    let endpoint = match path {
        "/oauth-provider/authorize" => Some(Endpoint::Authorize),
        "/oauth-provider/token" => Some(Endpoint::Token),
        "/oauth-provider/userinfo" => Some(Endpoint::Userinfo),
        "/oauth-provider/introspect" => Some(Endpoint::Introspect),
        "/oauth-provider/revoke" => Some(Endpoint::Revoke),
        _ => None,
    };
    let sign_in_post = method == "POST" && (path == "/login" || path.starts_with("/login/"));
    let page = path == "/" || path == "/logout" || path == "/login" || path.starts_with("/login/");
    let kind = match endpoint {
        Some(Endpoint::Authorize) => RouteKind::Page,
        Some(_) => RouteKind::OAuth,
        None if page => RouteKind::Page,
        None => RouteKind::Json,
    };
    Some(Route { kind, endpoint, oauth: endpoint.is_some() || sign_in_post })
}

/// Every policy of one configuration, built once at start.
#[derive(Clone, Debug)]
pub struct Policies {
    list: Vec<Policy>,
    endpoints: Vec<(Endpoint, PolicyId)>,
}

pub const GLOBAL: PolicyId = PolicyId(0);
pub const OAUTH: PolicyId = PolicyId(1);
/// The token endpoint per authenticated client: the token endpoint's numbers, keyed on the
/// client instead of the IP.
pub const TOKEN_CLIENT: PolicyId = PolicyId(2);

impl Policies {
    pub fn from_config(config: &RateLimitConfig) -> Self {
        let token = config.endpoint("token").unwrap_or((20, 40));
        let mut list = vec![
            Policy::per_window("global", config.max, config.window),
            Policy::per_window("oauth", config.oauth_max, config.oauth_window),
            Policy::per_minute("token-client", token.0, token.1),
        ];
        let mut endpoints = Vec::new();
        for endpoint in Endpoint::ALL {
            if let Some((per_minute, burst)) = config.endpoint(endpoint.as_str()) {
                endpoints.push((endpoint, PolicyId(list.len())));
                list.push(Policy::per_minute(endpoint.as_str(), per_minute, burst));
            }
        }
        Policies { list, endpoints }
    }

    pub fn get(&self, id: PolicyId) -> &Policy {
        &self.list[id.0]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.list.iter()
    }

    /// The policies keyed on the client IP that `route` meets, narrowest first (the endpoint,
    /// then the OAuth set, then the global limit): in process, a refusal by the first stops
    /// before the broader ones are counted.
    pub fn for_route(&self, route: Route) -> Vec<PolicyId> {
        let mut ids = Vec::with_capacity(3);
        if let Some(endpoint) = route.endpoint
            && let Some((_, id)) = self.endpoints.iter().find(|(e, _)| *e == endpoint)
        {
            ids.push(*id);
        }
        if route.oauth {
            ids.push(OAUTH);
        }
        ids.push(GLOBAL);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified() {
        assert_eq!(classify("GET", "/health"), None);
        assert_eq!(classify("GET", "/health/ready"), None);
        assert_eq!(classify("GET", "/metrics"), None);
        let token = classify("POST", "/oauth-provider/token").expect("limited");
        assert_eq!(token, Route { kind: RouteKind::OAuth, endpoint: Some(Endpoint::Token), oauth: true });
        let authorize = classify("GET", "/oauth-provider/authorize").expect("limited");
        assert_eq!(authorize.kind, RouteKind::Page);
        assert_eq!(classify("POST", "/login").map(|r| (r.kind, r.oauth)), Some((RouteKind::Page, true)));
        assert_eq!(classify("POST", "/login/mfa").map(|r| (r.kind, r.oauth)), Some((RouteKind::Page, true)));
        assert_eq!(classify("GET", "/login").map(|r| (r.kind, r.oauth)), Some((RouteKind::Page, false)));
        assert_eq!(classify("GET", "/loginx").map(|r| r.kind), Some(RouteKind::Json));
        assert_eq!(classify("GET", "/oauth-provider/jwks").map(|r| (r.kind, r.oauth)), Some((RouteKind::Json, false)));
        assert_eq!(classify("GET", "/oauth-provider/clients").map(|r| r.kind), Some(RouteKind::Json));
        assert_eq!(classify("GET", "/healthz").map(|r| r.kind), Some(RouteKind::Json));
    }

    #[test]
    fn policies_follow_the_configuration() {
        let config = crate::config::Config::from_lookup(&|name| match name {
            "RATE_LIMIT_MAX" => Some("100".into()),
            "RATE_LIMIT_WINDOW" => Some("900000".into()),
            "RATE_LIMIT_ENDPOINTS" => Some("token=30:60".into()),
            _ => None,
        })
        .expect("config");
        let policies = Policies::from_config(&config.rate_limit);
        assert_eq!(policies.get(GLOBAL), &Policy::per_window("global", 100, Duration::from_secs(900)));
        assert_eq!(policies.get(GLOBAL).interval, Duration::from_secs(9));
        assert_eq!(policies.get(GLOBAL).window(), Duration::from_secs(900));
        assert_eq!(policies.get(TOKEN_CLIENT).interval, Duration::from_secs(2));
        assert_eq!(policies.get(TOKEN_CLIENT).burst, 60);
        let route = classify("POST", "/oauth-provider/token").expect("limited");
        let names: Vec<&str> = policies.for_route(route).into_iter().map(|id| policies.get(id).name.as_str()).collect();
        assert_eq!(names, ["token", "oauth", "global"]);
        let route = classify("GET", "/.well-known/openid-configuration").expect("limited");
        assert_eq!(policies.for_route(route), [GLOBAL]);
    }
}

-- Truxe initial schema (PostgreSQL). Instants are UTC epoch seconds (BIGINT) so that the
-- same diesel schema serves SQLite and PostgreSQL; list-valued fields that are only ever read
-- whole (scopes, grant types) are space-separated text, anything queried by element is a child table.

CREATE TABLE oauth_clients (
    client_id                  TEXT PRIMARY KEY,
    client_name                TEXT NOT NULL,
    secret_hash                TEXT,
    previous_secret_hash       TEXT,
    previous_secret_expires_at BIGINT,
    token_endpoint_auth_method TEXT NOT NULL,
    grant_types                TEXT NOT NULL,
    allowed_scopes             TEXT NOT NULL,
    require_pkce               BOOLEAN NOT NULL DEFAULT TRUE,
    require_consent            BOOLEAN NOT NULL DEFAULT TRUE,
    trusted                    BOOLEAN NOT NULL DEFAULT FALSE,
    client_uri                 TEXT,
    logo_uri                   TEXT,
    tos_uri                    TEXT,
    policy_uri                 TEXT,
    status                     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'revoked')),
    created_at                 BIGINT NOT NULL,
    updated_at                 BIGINT NOT NULL
);
CREATE INDEX idx_oauth_clients_status ON oauth_clients (status);

-- purpose: 'redirect' (authorization redirect_uri) or 'post_logout' (RP-initiated logout).
CREATE TABLE oauth_client_redirect_uris (
    client_id TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    purpose   TEXT NOT NULL CHECK (purpose IN ('redirect', 'post_logout')),
    uri       TEXT NOT NULL,
    PRIMARY KEY (client_id, purpose, uri)
);

CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    display_name   TEXT,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- A browser session; the cookie carries a random id, the table only its hash.
CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    auth_time    BIGINT NOT NULL,
    amr          TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    ip           TEXT,
    user_agent   TEXT
);
CREATE INDEX idx_sessions_user_id ON sessions (user_id);

CREATE TABLE oauth_consents (
    user_id    TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- A grant is one authorization (a code exchange or a client_credentials issue); refresh tokens
-- of one grant form a family that is revoked together.
CREATE TABLE oauth_grants (
    grant_id   TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    user_id    TEXT REFERENCES users (user_id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    auth_time  BIGINT,
    amr        TEXT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX idx_oauth_grants_user_id ON oauth_grants (user_id);
CREATE INDEX idx_oauth_grants_client_id ON oauth_grants (client_id);

CREATE TABLE oauth_authorization_codes (
    code_hash             TEXT PRIMARY KEY,
    client_id             TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    user_id               TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    redirect_uri          TEXT NOT NULL,
    scope                 TEXT NOT NULL,
    code_challenge        TEXT,
    code_challenge_method TEXT,
    nonce                 TEXT,
    auth_time             BIGINT NOT NULL,
    amr                   TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    consumed_at           BIGINT,
    grant_id              TEXT REFERENCES oauth_grants (grant_id) ON DELETE SET NULL
);
CREATE INDEX idx_oauth_codes_expires_at ON oauth_authorization_codes (expires_at);

-- Refresh tokens (opaque, stored as a hash) and revoked access tokens (by jti).
CREATE TABLE oauth_tokens (
    jti         TEXT PRIMARY KEY,
    token_type  TEXT NOT NULL CHECK (token_type IN ('access_token', 'refresh_token')),
    token_hash  TEXT UNIQUE,
    grant_id    TEXT REFERENCES oauth_grants (grant_id) ON DELETE CASCADE,
    client_id   TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    user_id     TEXT REFERENCES users (user_id) ON DELETE CASCADE,
    scope       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    rotated_at  BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX idx_oauth_tokens_user_id ON oauth_tokens (user_id);
CREATE INDEX idx_oauth_tokens_grant_id ON oauth_tokens (grant_id);
CREATE INDEX idx_oauth_tokens_expires_at ON oauth_tokens (expires_at);

-- Public halves of every key that signed tokens, so that verification survives rotation.
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    algorithm  TEXT NOT NULL,
    public_pem TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

CREATE TABLE audit_events (
    event_id    TEXT PRIMARY KEY,
    occurred_at BIGINT NOT NULL,
    action      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    subject     TEXT,
    client_id   TEXT,
    user_id     TEXT,
    ip          TEXT,
    request_id  TEXT,
    details     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX idx_audit_events_occurred_at ON audit_events (occurred_at);

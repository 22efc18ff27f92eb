-- Per-client policies. Audiences are JSON arrays of strings (each one of JWT_AUDIENCE when
-- registered); lifetimes are seconds, NULL meaning the server's configured value.
ALTER TABLE oauth_clients ADD COLUMN allowed_audiences TEXT NOT NULL DEFAULT '[]';
ALTER TABLE oauth_clients ADD COLUMN introspection_audiences TEXT NOT NULL DEFAULT '[]';
ALTER TABLE oauth_clients ADD COLUMN access_token_ttl BIGINT NULL;
ALTER TABLE oauth_clients ADD COLUMN refresh_token_ttl BIGINT NULL;
ALTER TABLE oauth_clients ADD COLUMN authorization_code_ttl BIGINT NULL;

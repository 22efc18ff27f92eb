ALTER TABLE oauth_clients DROP COLUMN authorization_code_ttl;
ALTER TABLE oauth_clients DROP COLUMN refresh_token_ttl;
ALTER TABLE oauth_clients DROP COLUMN access_token_ttl;
ALTER TABLE oauth_clients DROP COLUMN introspection_audiences;
ALTER TABLE oauth_clients DROP COLUMN allowed_audiences;

-- Whether the authorization request carried redirect_uri: then the token request must repeat it (RFC 6749 §4.1.3).
ALTER TABLE oauth_authorization_codes ADD COLUMN redirect_uri_given BOOLEAN NOT NULL DEFAULT TRUE;

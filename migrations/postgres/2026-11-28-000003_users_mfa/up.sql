-- TOTP second factor and email magic links.
--
-- mfa_secret holds the TOTP key encrypted (AES-256-GCM under the server secret `mfa_secret_key`,
-- bound to the user id); it is set while enrolment is pending and mfa_enabled turns true once
-- the user has confirmed it with a first valid code. mfa_last_step is the last accepted TOTP
-- time step (RFC 6238 §5.2: a code is accepted once). Lockout: mfa_failed_attempts consecutive
-- wrong codes, then mfa_locked_until.
ALTER TABLE users
    ADD COLUMN mfa_secret          TEXT,
    ADD COLUMN mfa_enabled         BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN mfa_last_step       BIGINT,
    ADD COLUMN mfa_failed_attempts INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN mfa_locked_until    BIGINT,
    ADD COLUMN mfa_enrolled_at     BIGINT;

-- Single-use recovery codes, stored as HMAC-SHA256 under the server secret `mfa_hmac_key`.
CREATE TABLE mfa_recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- Sign-in links sent by email; the link carries a random token, the table only its hash.
-- user_id is NULL when the address has no account yet (open sign-up creates it on redemption).
CREATE TABLE magic_links (
    token_hash  TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    user_id     TEXT REFERENCES users (user_id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    consumed_at BIGINT,
    return_to   TEXT,
    ip          TEXT
);
CREATE INDEX idx_magic_links_email_created_at ON magic_links (email, created_at);
CREATE INDEX idx_magic_links_expires_at ON magic_links (expires_at);

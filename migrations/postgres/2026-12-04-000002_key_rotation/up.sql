-- Key rotation: every instance reads the signing schedule from here (see truxe-server/src/keyring).
-- origin: 'env' (JWT_PRIVATE_KEY, the operator's; its private half is never stored) or
-- 'generated' (made by Truxe; its private half is stored AES-256-GCM-encrypted under a key derived
-- from SESSION_SECRET, and wiped when the key retires).
ALTER TABLE signing_keys ADD COLUMN origin TEXT NOT NULL DEFAULT 'env';
ALTER TABLE signing_keys ADD COLUMN private_key_sealed TEXT;
-- When the key starts signing (published in the JWKS from created_at on).
ALTER TABLE signing_keys ADD COLUMN activates_at BIGINT NOT NULL DEFAULT 0;
-- When the key leaves the JWKS: its successor's activation plus the longest token lifetime.
ALTER TABLE signing_keys ADD COLUMN retires_at BIGINT;
UPDATE signing_keys SET activates_at = created_at;

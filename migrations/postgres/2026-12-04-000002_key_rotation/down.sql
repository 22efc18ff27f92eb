ALTER TABLE signing_keys DROP COLUMN retires_at;
ALTER TABLE signing_keys DROP COLUMN activates_at;
ALTER TABLE signing_keys DROP COLUMN private_key_sealed;
ALTER TABLE signing_keys DROP COLUMN origin;

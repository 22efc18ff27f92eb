DROP TABLE magic_links;
DROP TABLE mfa_recovery_codes;
ALTER TABLE users DROP COLUMN mfa_enrolled_at;
ALTER TABLE users DROP COLUMN mfa_locked_until;
ALTER TABLE users DROP COLUMN mfa_failed_attempts;
ALTER TABLE users DROP COLUMN mfa_last_step;
ALTER TABLE users DROP COLUMN mfa_enabled;
ALTER TABLE users DROP COLUMN mfa_secret;

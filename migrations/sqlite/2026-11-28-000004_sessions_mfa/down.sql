DROP INDEX idx_sessions_expires_at;
ALTER TABLE sessions DROP COLUMN mfa_pending;

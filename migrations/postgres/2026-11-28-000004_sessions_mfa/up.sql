-- A session that has passed the magic link but still owes the second factor: it signs nobody
-- in until /login/mfa completes it (and then it is replaced by a new session id).
ALTER TABLE sessions ADD COLUMN mfa_pending BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX idx_sessions_expires_at ON sessions (expires_at);

-- The tamper-evident audit chain (store::audit). Every entry gets its place in one chain (seq,
-- unique, gapless), the hash of the entry before it and its own hash: hex SHA-256 over the
-- canonical serialization of its fields and prev_hash. Entries written before this migration
-- keep seq NULL until the first append (or the server's start) chains them in time order.
ALTER TABLE audit_events ADD COLUMN seq BIGINT NULL;
ALTER TABLE audit_events ADD COLUMN user_agent TEXT NULL;
ALTER TABLE audit_events ADD COLUMN result TEXT NOT NULL DEFAULT 'success';
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT NULL;
ALTER TABLE audit_events ADD COLUMN hash TEXT NULL;
CREATE UNIQUE INDEX idx_audit_events_seq ON audit_events (seq);
CREATE INDEX idx_audit_events_user ON audit_events (user_id, seq);
CREATE INDEX idx_audit_events_client ON audit_events (client_id, seq);
CREATE INDEX idx_audit_events_action ON audit_events (action, seq);

-- One row (id 1): the chain's head. Appending locks this row first, so that appends from every
-- instance are serialized (PostgreSQL: a row lock until commit; SQLite: the write lock), and the
-- head lets `truxectl audit verify` notice entries deleted from the end. legacy_chained: the
-- entries from before the chain existed have been given their places.
CREATE TABLE audit_chain (
    id             INTEGER PRIMARY KEY,
    head_seq       BIGINT NOT NULL,
    head_hash      TEXT NOT NULL,
    legacy_chained BOOLEAN NOT NULL DEFAULT FALSE
);
-- On an empty log there is nothing from before the chain to give a place to.
INSERT INTO audit_chain (id, head_seq, head_hash, legacy_chained)
    SELECT 1, 0, '0000000000000000000000000000000000000000000000000000000000000000',
           NOT EXISTS (SELECT 1 FROM audit_events);

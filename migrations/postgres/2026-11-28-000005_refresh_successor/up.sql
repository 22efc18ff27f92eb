-- The refresh token that replaced a rotated one: a retry within the reuse grace window revokes
-- it before issuing another, so at most one child of a rotated token is ever live.
ALTER TABLE oauth_tokens ADD COLUMN replaced_by TEXT NULL;

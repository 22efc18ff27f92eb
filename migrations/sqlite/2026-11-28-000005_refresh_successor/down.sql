ALTER TABLE oauth_tokens DROP COLUMN replaced_by;

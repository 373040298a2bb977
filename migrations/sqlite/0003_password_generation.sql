-- A login verifies a password, waits for Argon2, then opens a family. A password change
-- that commits in between must still end that login: each user counts its password
-- changes, each family records the count its login was checked against, and a family
-- whose count is behind its user's is dead (checked when it opens, refreshes and
-- authenticates).
ALTER TABLE users ADD COLUMN password_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE refresh_families ADD COLUMN password_generation INTEGER NOT NULL DEFAULT 0;

-- A password check in flight holds a lease on each of its lockout keys (its email or
-- session, and its client's address), so a check counts against the limit from the
-- moment it is admitted, on every replica. A lease ends with its check; one whose
-- replica died ends at expires_at.
CREATE TABLE login_leases (
    key        text NOT NULL,
    id         uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key, id)
);
CREATE INDEX login_leases_id ON login_leases (id);
CREATE INDEX login_leases_expires ON login_leases (expires_at);

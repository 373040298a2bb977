-- One row that readiness rewrites to prove the database accepts writes again after a
-- write failed (disk full, read-only file, lock held elsewhere).
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);

//! The tables `migrate-data` copies, one type each: which SQLite columns it reads and
//! how each becomes its PostgreSQL column. What a table holds changes here; how a copy
//! runs (snapshot, locks, counts, one transaction) stays in `transfer`.

use ::postgres::types::ToSql;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One table's rows, column by column, as arrays for one `INSERT … SELECT FROM unnest`:
/// a batch is one statement, whatever its size, and every value a parameter.
pub(super) trait Columns {
    const TABLE: &'static str;
    /// Reads the source's columns in the order `push` takes them.
    const SELECT: &'static str;
    fn insert(&self) -> &'static str;
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String>;
    fn len(&self) -> usize;
    fn params(&self) -> Vec<&(dyn ToSql + Sync)>;
    fn clear(&mut self);
}

fn time(row: &rusqlite::Row<'_>, idx: usize) -> Result<DateTime<Utc>, String> {
    let secs: i64 = row.get(idx).map_err(|e| e.to_string())?;
    DateTime::from_timestamp(secs, 0).ok_or_else(|| format!("a time out of range ({secs})"))
}

fn opt_time(row: &rusqlite::Row<'_>, idx: usize) -> Result<Option<DateTime<Utc>>, String> {
    let secs: Option<i64> = row.get(idx).map_err(|e| e.to_string())?;
    secs.map(|s| DateTime::from_timestamp(s, 0).ok_or_else(|| format!("a time out of range ({s})")))
        .transpose()
}

fn id(row: &rusqlite::Row<'_>, idx: usize) -> Result<Uuid, String> {
    let text: String = row.get(idx).map_err(|e| e.to_string())?;
    Uuid::parse_str(&text).map_err(|_| "an id that is not a UUID".to_owned())
}

fn opt_id(row: &rusqlite::Row<'_>, idx: usize) -> Result<Option<Uuid>, String> {
    let text: Option<String> = row.get(idx).map_err(|e| e.to_string())?;
    text.map(|t| Uuid::parse_str(&t).map_err(|_| "an id that is not a UUID".to_owned()))
        .transpose()
}

fn get<T: rusqlite::types::FromSql>(row: &rusqlite::Row<'_>, idx: usize) -> Result<T, String> {
    row.get(idx).map_err(|e| e.to_string())
}

#[derive(Default)]
pub(super) struct Users {
    id: Vec<Uuid>,
    email: Vec<String>,
    password_hash: Vec<String>,
    role: Vec<String>,
    disabled: Vec<bool>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    password_generation: Vec<i64>,
    email_verified: Vec<bool>,
}

impl Columns for Users {
    const TABLE: &'static str = "users";
    const SELECT: &'static str = "SELECT id, email, password_hash, role, disabled, created_at,
                                         updated_at, password_generation, email_verified
                                  FROM users";
    fn insert(&self) -> &'static str {
        "INSERT INTO users (id, email, password_hash, role, disabled, created_at, updated_at,
                            password_generation, email_verified)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[],
                              $6::timestamptz[], $7::timestamptz[], $8::int8[], $9::bool[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.id.push(id(row, 0)?);
        self.email.push(get(row, 1)?);
        self.password_hash.push(get(row, 2)?);
        self.role.push(get(row, 3)?);
        self.disabled.push(get::<i64>(row, 4)? != 0);
        self.created_at.push(time(row, 5)?);
        self.updated_at.push(time(row, 6)?);
        self.password_generation.push(get(row, 7)?);
        self.email_verified.push(get::<i64>(row, 8)? != 0);
        Ok(())
    }
    fn len(&self) -> usize {
        self.id.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.email,
            &self.password_hash,
            &self.role,
            &self.disabled,
            &self.created_at,
            &self.updated_at,
            &self.password_generation,
            &self.email_verified,
        ]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Default)]
pub(super) struct Families {
    id: Vec<Uuid>,
    user_id: Vec<Uuid>,
    created_at: Vec<DateTime<Utc>>,
    last_used_at: Vec<DateTime<Utc>>,
    expires_at: Vec<DateTime<Utc>>,
    revoked_at: Vec<Option<DateTime<Utc>>>,
    revoked_reason: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    ip: Vec<Option<String>>,
    password_generation: Vec<i64>,
}

impl Columns for Families {
    const TABLE: &'static str = "refresh_families";
    const SELECT: &'static str = "SELECT id, user_id, created_at, last_used_at, expires_at,
                                         revoked_at, revoked_reason, user_agent, ip,
                                         password_generation
                                  FROM refresh_families ORDER BY rowid";
    fn insert(&self) -> &'static str {
        "INSERT INTO refresh_families (id, user_id, created_at, last_used_at, expires_at,
                                       revoked_at, revoked_reason, user_agent, ip,
                                       password_generation)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[],
                              $5::timestamptz[], $6::timestamptz[], $7::text[], $8::text[],
                              $9::text[], $10::int8[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.id.push(id(row, 0)?);
        self.user_id.push(id(row, 1)?);
        self.created_at.push(time(row, 2)?);
        self.last_used_at.push(time(row, 3)?);
        self.expires_at.push(time(row, 4)?);
        self.revoked_at.push(opt_time(row, 5)?);
        self.revoked_reason.push(get(row, 6)?);
        self.user_agent.push(get(row, 7)?);
        self.ip.push(get(row, 8)?);
        self.password_generation.push(get(row, 9)?);
        Ok(())
    }
    fn len(&self) -> usize {
        self.id.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.user_id,
            &self.created_at,
            &self.last_used_at,
            &self.expires_at,
            &self.revoked_at,
            &self.revoked_reason,
            &self.user_agent,
            &self.ip,
            &self.password_generation,
        ]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Default)]
pub(super) struct Tokens {
    hash: Vec<Vec<u8>>,
    family_id: Vec<Uuid>,
    parent_hash: Vec<Option<Vec<u8>>>,
    issued_at: Vec<DateTime<Utc>>,
    expires_at: Vec<DateTime<Utc>>,
    spent_at: Vec<Option<DateTime<Utc>>>,
}

impl Columns for Tokens {
    const TABLE: &'static str = "refresh_tokens";
    const SELECT: &'static str = "SELECT hash, family_id, parent_hash, issued_at, expires_at,
                                         spent_at
                                  FROM refresh_tokens";
    fn insert(&self) -> &'static str {
        "INSERT INTO refresh_tokens (hash, family_id, parent_hash, issued_at, expires_at,
                                     spent_at)
         SELECT * FROM unnest($1::bytea[], $2::uuid[], $3::bytea[], $4::timestamptz[],
                              $5::timestamptz[], $6::timestamptz[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.hash.push(get(row, 0)?);
        self.family_id.push(id(row, 1)?);
        self.parent_hash.push(get(row, 2)?);
        self.issued_at.push(time(row, 3)?);
        self.expires_at.push(time(row, 4)?);
        self.spent_at.push(opt_time(row, 5)?);
        Ok(())
    }
    fn len(&self) -> usize {
        self.hash.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.hash,
            &self.family_id,
            &self.parent_hash,
            &self.issued_at,
            &self.expires_at,
            &self.spent_at,
        ]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Default)]
pub(super) struct Attempts {
    key: Vec<String>,
    window_start: Vec<DateTime<Utc>>,
    failures: Vec<i32>,
}

impl Columns for Attempts {
    const TABLE: &'static str = "login_attempts";
    const SELECT: &'static str = "SELECT key, window_start, failures FROM login_attempts";
    fn insert(&self) -> &'static str {
        "INSERT INTO login_attempts (key, window_start, failures)
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int4[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.key.push(get(row, 0)?);
        self.window_start.push(time(row, 1)?);
        let failures: i64 = get(row, 2)?;
        self.failures.push(
            i32::try_from(failures)
                .map_err(|_| format!("a failure count out of range ({failures})"))?,
        );
        Ok(())
    }
    fn len(&self) -> usize {
        self.key.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.key, &self.window_start, &self.failures]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Default)]
pub(super) struct Audit {
    keep_ids: bool,
    id: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    kind: Vec<String>,
    user_id: Vec<Option<Uuid>>,
    family_id: Vec<Option<Uuid>>,
    actor_id: Vec<Option<Uuid>>,
    ip: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    outcome: Vec<String>,
    detail: Vec<Option<String>>,
}

impl Audit {
    /// `keep`: the target holds no audit events, so the source's ids can stay.
    pub(super) fn keeping_ids(keep: bool) -> Self {
        Self {
            keep_ids: keep,
            ..Self::default()
        }
    }
}

impl Columns for Audit {
    const TABLE: &'static str = "audit_events";
    // In id order: when ids are not kept, the target numbers them in this order, so
    // "newest first" still holds.
    const SELECT: &'static str = "SELECT id, at, type, user_id, family_id, actor_id, ip,
                                         user_agent, outcome, detail
                                  FROM audit_events ORDER BY id";
    fn insert(&self) -> &'static str {
        if self.keep_ids {
            "INSERT INTO audit_events (id, at, type, user_id, family_id, actor_id, ip,
                                       user_agent, outcome, detail)
             OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::text[], $4::uuid[],
                                  $5::uuid[], $6::uuid[], $7::text[], $8::text[], $9::text[],
                                  $10::text[])"
        } else {
            "INSERT INTO audit_events (at, type, user_id, family_id, actor_id, ip, user_agent,
                                       outcome, detail)
             SELECT at, kind, user_id, family_id, actor_id, ip, user_agent, outcome, detail
             FROM unnest($1::timestamptz[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[],
                         $6::text[], $7::text[], $8::text[], $9::text[])
                  WITH ORDINALITY AS e(at, kind, user_id, family_id, actor_id, ip,
                                       user_agent, outcome, detail, n)
             ORDER BY n"
        }
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.id.push(get(row, 0)?);
        self.at.push(time(row, 1)?);
        self.kind.push(get(row, 2)?);
        self.user_id.push(opt_id(row, 3)?);
        self.family_id.push(opt_id(row, 4)?);
        self.actor_id.push(opt_id(row, 5)?);
        self.ip.push(get(row, 6)?);
        self.user_agent.push(get(row, 7)?);
        self.outcome.push(get(row, 8)?);
        self.detail.push(get(row, 9)?);
        Ok(())
    }
    fn len(&self) -> usize {
        self.at.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(10);
        if self.keep_ids {
            params.push(&self.id);
        }
        params.extend([
            &self.at as &(dyn ToSql + Sync),
            &self.kind,
            &self.user_id,
            &self.family_id,
            &self.actor_id,
            &self.ip,
            &self.user_agent,
            &self.outcome,
            &self.detail,
        ]);
        params
    }
    fn clear(&mut self) {
        *self = Self {
            keep_ids: self.keep_ids,
            ..Self::default()
        };
    }
}

#[derive(Default)]
pub(super) struct Clients {
    id: Vec<Uuid>,
    name: Vec<String>,
    scopes: Vec<String>,
    audience: Vec<Option<String>>,
    created_at: Vec<DateTime<Utc>>,
    last_used_at: Vec<Option<DateTime<Utc>>>,
    disabled: Vec<bool>,
}

impl Columns for Clients {
    const TABLE: &'static str = "clients";
    const SELECT: &'static str = "SELECT id, name, scopes, audience, created_at, last_used_at,
                                         disabled
                                  FROM clients";
    fn insert(&self) -> &'static str {
        "INSERT INTO clients (id, name, scopes, audience, created_at, last_used_at, disabled)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                              $5::timestamptz[], $6::timestamptz[], $7::bool[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.id.push(id(row, 0)?);
        self.name.push(get(row, 1)?);
        self.scopes.push(get(row, 2)?);
        self.audience.push(get(row, 3)?);
        self.created_at.push(time(row, 4)?);
        self.last_used_at.push(opt_time(row, 5)?);
        self.disabled.push(get::<i64>(row, 6)? != 0);
        Ok(())
    }
    fn len(&self) -> usize {
        self.id.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.name,
            &self.scopes,
            &self.audience,
            &self.created_at,
            &self.last_used_at,
            &self.disabled,
        ]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Default)]
pub(super) struct ClientSecrets {
    client_id: Vec<Uuid>,
    hash: Vec<Vec<u8>>,
    created_at: Vec<DateTime<Utc>>,
    not_after: Vec<Option<DateTime<Utc>>>,
}

impl Columns for ClientSecrets {
    const TABLE: &'static str = "client_secrets";
    const SELECT: &'static str = "SELECT client_id, hash, created_at, not_after
                                  FROM client_secrets";
    fn insert(&self) -> &'static str {
        "INSERT INTO client_secrets (client_id, hash, created_at, not_after)
         SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::timestamptz[], $4::timestamptz[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.client_id.push(id(row, 0)?);
        self.hash.push(get(row, 1)?);
        self.created_at.push(time(row, 2)?);
        self.not_after.push(opt_time(row, 3)?);
        Ok(())
    }
    fn len(&self) -> usize {
        self.client_id.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.client_id,
            &self.hash,
            &self.created_at,
            &self.not_after,
        ]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

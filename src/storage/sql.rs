//! SQL that both backends run as written: the column lists their row mappings read, and
//! the predicates that state a rule, so that a rule changes in one place for both.
//! Placeholders differ (`?1` in SQLite, `$1` in PostgreSQL), so a predicate that takes a
//! parameter is a function of its placeholder.

/// The `users` columns (alias `u`) that each backend's row → `User` mapping reads, in
/// its order.
macro_rules! user_columns {
    () => {
        "u.id, u.email, u.role, u.disabled, u.created_at, u.email_verified, \
         (EXISTS (SELECT 1 FROM mfa_totp m WHERE m.user_id = u.id AND m.enabled_at IS NOT NULL) \
          OR EXISTS (SELECT 1 FROM passkeys p WHERE p.user_id = u.id))"
    };
}

pub(crate) const USER_COLUMNS: &str = user_columns!();

/// How many columns `USER_COLUMNS` names: a row mapping reads what follows from here.
pub(crate) const USER_WIDTH: usize = 7;

/// `USER_COLUMNS`, then what a row → `Account` mapping reads after them.
pub(crate) const ACCOUNT_COLUMNS: &str =
    concat!(user_columns!(), ", u.password_hash, u.password_generation");

/// Family `f` is still open at `now`: not revoked, and before its absolute expiry.
fn family_open(now: &str) -> String {
    format!("f.revoked_at IS NULL AND f.expires_at > {now}")
}

/// Family `f` of user `u` still stands behind an access token at `now`: open, and opened
/// under the user's current password.
pub(crate) fn session_current(now: &str) -> String {
    format!(
        "{} AND f.password_generation = u.password_generation",
        family_open(now)
    )
}

/// Family `f` is live at `now`, as the session list shows it: open, and holding an
/// unspent token that has not idled out (one that has cannot be refreshed again).
pub(crate) fn session_live(now: &str) -> String {
    format!(
        "{} AND EXISTS (SELECT 1 FROM refresh_tokens t
             WHERE t.family_id = f.id AND t.spent_at IS NULL AND t.expires_at > {now})",
        family_open(now)
    )
}

/// The families of a user, all or (`include_ended` false) only live ones, and the
/// columns each backend's row → `Session` mapping reads, in its order. Within one
/// second, the backend orders by the order of opening (`opened` names its column).
pub(crate) fn sessions_of_user(user: &str, include_ended: &str, now: &str, opened: &str) -> String {
    format!(
        "SELECT f.id, f.created_at, f.last_used_at, f.expires_at, f.revoked_at,
                f.revoked_reason, f.user_agent, f.ip, f.amr
         FROM refresh_families f
         WHERE f.user_id = {user} AND ({include_ended} OR ({}))
         ORDER BY f.created_at DESC, {opened} DESC",
        session_live(now)
    )
}

/// Revokes every open family of a user, keeping the first revocation of one already
/// revoked.
pub(crate) fn revoke_user_families(user: &str, now: &str, reason: &str) -> String {
    format!(
        "UPDATE refresh_families SET revoked_at = {now}, revoked_reason = {reason}
         WHERE user_id = {user} AND revoked_at IS NULL"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_columns_start_with_the_user_columns() {
        assert!(ACCOUNT_COLUMNS.starts_with(USER_COLUMNS));
        assert_eq!(USER_COLUMNS.split(", ").count(), USER_WIDTH);
        assert_eq!(ACCOUNT_COLUMNS.split(", ").count(), USER_WIDTH + 2);
    }
}

//! One conformance suite for `Store`: every case is written once, in `cases/` (one file
//! per part of the store), and runs
//! on each backend (`sqlite::*` and `postgres::*`), and on PostgreSQL a second time with
//! statements sent unnamed (`postgres_unprepared::*`, `GATEHOUSE_DB_PREPARED_STATEMENTS=off`).
//! A backend is done when it passes them all.
//!
//! PostgreSQL cases use the server at `GATEHOUSE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), each in a database of its own that is
//! dropped afterwards. No server fails them; `GATEHOUSE_TEST_POSTGRES=off` skips them,
//! loudly.

mod backends;
mod cases;
#[path = "../kit/pgdb.rs"]
mod pgdb;
mod postgres_only;

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    let backend = crate::backends::sqlite();
                    crate::cases::$case(&backend);
                }
            )*
        }

        mod postgres {
            $(
                #[test]
                fn $case() {
                    let Some(backend) = crate::backends::postgres(stringify!($case), true)
                    else {
                        return;
                    };
                    crate::cases::$case(&backend);
                }
            )*
        }

        mod postgres_unprepared {
            $(
                #[test]
                fn $case() {
                    let Some(backend) = crate::backends::postgres(stringify!($case), false)
                    else {
                        return;
                    };
                    crate::cases::$case(&backend);
                }
            )*
        }
    };
}

conformance!(
    schema_is_migrated_and_the_store_answers,
    clients_round_trip_and_rotate_their_secrets,
    the_feed_lists_revoked_and_deleted_families_in_its_window,
    users_are_created_found_and_unique,
    an_unknown_role_in_the_database_is_an_internal_error,
    search_matches_a_prefix_with_wildcards_as_plain_characters,
    update_user_sets_role_and_disabling_revokes_every_family,
    a_token_is_found_with_its_family_user_and_child,
    a_token_is_spent_once_and_its_child_stored,
    concurrent_claims_on_one_token_have_one_winner,
    revoked_families_stay_revoked,
    create_family_refuses_a_stale_generation_a_disabled_or_a_deleted_user,
    two_password_changes_from_one_generation_one_wins,
    logins_racing_a_password_change_leave_no_live_family_behind,
    delete_user_scrubs_audit_and_forgets_families_and_lockout,
    logins_racing_a_disable_or_a_deletion_leave_nothing_behind,
    a_family_opens_with_its_event_and_forgiveness_or_not_at_all,
    lockout_windows_count_expire_and_clear,
    concurrent_failures_are_all_counted,
    reservations_from_many_connections_admit_exactly_the_limit,
    leases_count_until_settled_opened_or_expired,
    prune_removes_what_no_rule_needs,
    account_for_session_requires_a_live_current_family,
    sessions_are_listed_live_or_all,
    sessions_opened_within_one_second_are_listed_newest_first,
    audit_is_listed_newest_first_and_filtered,
    audit_pages_and_hourly_counts_and_last_logins,
    a_totp_enrolment_is_pending_then_enabled_once,
    concurrent_claims_of_one_totp_step_have_one_winner,
    a_recovery_code_is_spent_once_and_a_new_set_replaces_the_old,
    an_mfa_token_is_spent_once_before_its_expiry_and_voided_by_the_user,
    passkeys_are_unique_listed_oldest_first_and_removed_by_their_owner,
    one_counter_value_is_recorded_once_among_concurrent_uses,
    a_flow_is_taken_once_before_its_expiry,
);

//! The refresh-token rule, as a pure function of the stored state, the clock and the
//! settings: who may rotate, when a replay is grace and when it is theft. Storage only
//! reads the state and makes the one atomic claim (`Store::spend_refresh_token`), so the
//! rule is the same on every backend and is tested here with a fixed clock.

use chrono::{DateTime, Duration, Utc};

use crate::crypto::constant_time_eq;
use crate::storage::{StoredToken, TokenHashBytes};

/// What to do with a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationVerdict {
    /// Live and unspent: claim it and issue a child expiring then.
    Rotate { child_expires_at: DateTime<Utc> },
    /// Spent inside the grace while its child is unused: hand out that same child again
    /// (it expires then); nothing changes.
    Replay { child_expires_at: DateTime<Utc> },
    /// A spent token outside the grace, or after its child was used: theft. The family
    /// is revoked.
    Reuse,
    /// Unknown, expired, revoked, opened under an old password, or of a disabled user.
    Invalid,
}

/// The settings the rule reads.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Idle lifetime of a child (capped by its family's absolute expiry).
    pub refresh_ttl: Duration,
    /// How long after a spend its unused child may be handed out again; zero = never.
    pub reuse_grace: Duration,
}

/// Judges a known token `t` presented at `now` (an unknown one is simply invalid);
/// `child` is the child this presentation derives (the same for every presentation of
/// one token).
pub fn judge(
    t: &StoredToken,
    child: &TokenHashBytes,
    now: DateTime<Utc>,
    policy: Lifetimes,
) -> RotationVerdict {
    if t.family_revoked || t.family_stale || t.family_expires_at <= now || t.user.disabled {
        return RotationVerdict::Invalid;
    }
    let Some(spent_at) = t.spent_at else {
        if t.expires_at <= now {
            return RotationVerdict::Invalid;
        }
        return RotationVerdict::Rotate {
            child_expires_at: (now + policy.refresh_ttl).min(t.family_expires_at),
        };
    };
    let in_grace = policy.reuse_grace > Duration::zero() && now - spent_at <= policy.reuse_grace;
    match &t.child {
        Some(c)
            if in_grace && !c.spent && c.expires_at > now && constant_time_eq(&c.hash, child) =>
        {
            RotationVerdict::Replay {
                child_expires_at: c.expires_at,
            }
        }
        _ => RotationVerdict::Reuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, FamilyId, Role, User, UserId};
    use crate::storage::StoredChild;

    const CHILD: TokenHashBytes = [7; 32];

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    fn policy(grace_secs: i64) -> Lifetimes {
        Lifetimes {
            refresh_ttl: Duration::seconds(3600),
            reuse_grace: Duration::seconds(grace_secs),
        }
    }

    fn live() -> StoredToken {
        StoredToken {
            family_id: FamilyId::random(),
            user: User {
                id: UserId::random(),
                email: Email::parse("rule@example.com").expect("email"),
                role: Role::User,
                disabled: false,
                email_verified: false,
                created_at: at(0),
                mfa_enabled: false,
            },
            expires_at: at(600),
            spent_at: None,
            family_expires_at: at(10_000),
            family_revoked: false,
            family_stale: false,
            child: None,
            amr: crate::domain::Amr::Pwd,
        }
    }

    fn spent_at(secs: i64, child_spent: bool) -> StoredToken {
        StoredToken {
            spent_at: Some(at(secs)),
            child: Some(StoredChild {
                hash: CHILD,
                spent: child_spent,
                expires_at: at(secs + 3600),
            }),
            ..live()
        }
    }

    #[test]
    fn a_live_token_rotates_and_its_child_never_outlives_the_family() {
        let t = live();
        assert_eq!(
            judge(&t, &CHILD, at(100), policy(10)),
            RotationVerdict::Rotate {
                child_expires_at: at(3700)
            }
        );
        let t = StoredToken {
            family_expires_at: at(200),
            ..live()
        };
        assert_eq!(
            judge(&t, &CHILD, at(100), policy(10)),
            RotationVerdict::Rotate {
                child_expires_at: at(200)
            }
        );
    }

    #[test]
    fn expiry_revocation_a_stale_password_and_a_disabled_user_make_it_invalid() {
        let base = live();
        let cases = [
            (base.clone(), at(600)), // idle expiry reached
            (
                StoredToken {
                    family_expires_at: at(50),
                    ..base.clone()
                },
                at(50),
            ),
            (
                StoredToken {
                    family_revoked: true,
                    ..base.clone()
                },
                at(1),
            ),
            (
                StoredToken {
                    family_stale: true,
                    ..base.clone()
                },
                at(1),
            ),
            (
                StoredToken {
                    user: User {
                        disabled: true,
                        ..base.user.clone()
                    },
                    ..base.clone()
                },
                at(1),
            ),
        ];
        for (token, now) in cases {
            assert_eq!(
                judge(&token, &CHILD, now, policy(10)),
                RotationVerdict::Invalid
            );
        }
        // A revoked family stays revoked even for a spent token inside the grace.
        let t = StoredToken {
            family_revoked: true,
            ..spent_at(100, false)
        };
        assert_eq!(
            judge(&t, &CHILD, at(101), policy(10)),
            RotationVerdict::Invalid
        );
    }

    #[test]
    fn inside_the_grace_an_unused_child_is_handed_out_again() {
        let t = spent_at(100, false);
        for now in [at(100), at(105), at(110)] {
            assert_eq!(
                judge(&t, &CHILD, now, policy(10)),
                RotationVerdict::Replay {
                    child_expires_at: at(3700)
                }
            );
        }
    }

    #[test]
    fn after_the_grace_or_once_the_child_was_used_a_spent_token_is_reuse() {
        assert_eq!(
            judge(&spent_at(100, false), &CHILD, at(111), policy(10)),
            RotationVerdict::Reuse
        );
        assert_eq!(
            judge(&spent_at(100, true), &CHILD, at(101), policy(10)),
            RotationVerdict::Reuse
        );
        // Grace off: any second presentation is reuse.
        assert_eq!(
            judge(&spent_at(100, false), &CHILD, at(100), policy(0)),
            RotationVerdict::Reuse
        );
        // A child that is not the one this token derives proves nothing.
        assert_eq!(
            judge(&spent_at(100, false), &[9; 32], at(101), policy(10)),
            RotationVerdict::Reuse
        );
    }
}

//! Pure types of the auth domain. Nothing here knows HTTP, SQL or crypto.

mod audit;
pub mod client;
pub mod email;
mod ids;
mod mfa;
mod password;
mod session;
mod user;

pub use audit::AuditKind;
pub use client::{Client, Scopes};
pub use email::Email;
pub use ids::{ClientId, FamilyId, UserId};
pub use mfa::Amr;
pub use password::NewPassword;
pub use session::{RevokeReason, Session};
pub use user::{Role, User};

/// `e` and each of its causes, as one line: what an error logged once carries.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

//! Pure types of the auth domain. Nothing here knows HTTP, SQL or crypto.

mod audit;
pub mod email;
mod ids;
mod password;
mod session;
mod user;

pub use audit::AuditKind;
pub use email::Email;
pub use ids::{FamilyId, UserId};
pub use password::NewPassword;
pub use session::{RevokeReason, Session};
pub use user::{Role, User};

//! Pure types of the auth domain. Nothing here knows HTTP, SQL or crypto.

pub mod email;
mod password;
mod session;
mod user;

pub use email::Email;
pub use password::NewPassword;
pub use session::{RevokeReason, Session};
pub use user::{Role, User};

/// A user's id (the access token's `sub`).
pub type UserId = uuid::Uuid;
/// A refresh-token family's id (the access token's `sid`): one login, one device.
pub type FamilyId = uuid::Uuid;

//! The API tests' view of the test kit (`tests/kit`), under the names they import.

pub use crate::kit::app::*;
pub use crate::kit::body::*;
pub use crate::kit::contract::*;
pub use crate::kit::jwt::*;
pub use crate::kit::password::*;
pub use crate::kit::totp::*;

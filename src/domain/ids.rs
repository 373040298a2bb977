//! Ids as their own types, so a user id can never be passed where a family id belongs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random (v4) id.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            pub fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A user's id (the access token's `sub`).
    UserId
);
id_type!(
    /// A service client's id (`client_id`, and the `sub` of its tokens).
    ClientId
);
id_type!(
    /// A refresh-token family's id (the access token's `sid`): one login, one device.
    FamilyId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_parse_and_serialize_as_bare_uuids() {
        let id = UserId::random();
        let text = id.to_string();
        assert_eq!(text.parse::<UserId>().ok(), Some(id));
        assert_eq!(
            serde_json::to_string(&id).expect("json"),
            format!("\"{text}\"")
        );
        assert!("not-a-uuid".parse::<FamilyId>().is_err());
    }
}

//! Request-body parsing: arbitrary bytes through every JSON request DTO and its
//! validation, the way the HTTP layer does it (serde_json, then `validator`), plus the
//! domain parsers the validators call. Nothing may panic; email normalization must be
//! idempotent.
#![no_main]

use gatehouse::domain::{Email, NewPassword};
use gatehouse::http::dto::{
    AdminUserPatch, DeleteAccountRequest, LoginRequest, PasswordChangeRequest, RefreshRequest,
    SignupRequest, field_errors,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use validator::Validate;

fn through<T: DeserializeOwned + Validate>(data: &[u8]) {
    if let Ok(body) = serde_json::from_slice::<T>(data)
        && let Err(errors) = body.validate()
    {
        let details = field_errors(&errors);
        assert!(!details.is_empty(), "validation failed without details");
        for d in &details {
            assert!(!d.field.is_empty() && !d.message.is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    through::<SignupRequest>(data);
    through::<LoginRequest>(data);
    through::<RefreshRequest>(data);
    through::<PasswordChangeRequest>(data);
    through::<DeleteAccountRequest>(data);
    let _ = serde_json::from_slice::<AdminUserPatch>(data);

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(email) = Email::parse(text) {
            let again = Email::parse(email.as_str()).expect("a normalized email must parse");
            assert_eq!(
                again.as_str(),
                email.as_str(),
                "normalization is not idempotent"
            );
            assert!(email.as_str().chars().count() <= 254);
        }
        let _ = NewPassword::parse(text);
        let _ = gatehouse::crypto::refresh::RefreshToken::from_presented(text);
    }
});

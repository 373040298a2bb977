//! What an authenticator app does with an enrolment: codes from the base32 secret, by
//! `totp-rs` (not gatehouse's matching code), and the steps of the enrolment flow.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use totp_rs::{Algorithm, Builder, Secret};

use super::app::TestApp;
use super::contract::expect_json;

/// The 6-digit SHA-1 code an app shows at `at` for the base32 `secret`.
pub fn totp_code(secret: &str, at: DateTime<Utc>) -> String {
    let totp = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(Secret::try_from_base32(secret).expect("a base32 secret"))
        .build()
        .expect("a TOTP");
    totp.generate(u64::try_from(at.timestamp()).expect("after 1970"))
        .to_string()
}

/// A finished enrolment: the secret the app holds and the recovery codes shown.
pub struct Enrolled {
    pub secret: String,
    pub recovery_codes: Vec<String>,
}

impl TestApp {
    /// Enrols TOTP for the holder of `access_token` (password `password`), confirming
    /// with the current code, then moves the clock to the next step so that the next
    /// code is new.
    pub async fn enrol_totp(&self, access_token: &str, password: &str) -> Enrolled {
        let response = self
            .post_json_with_token(
                "/v1/me/mfa/totp",
                access_token,
                &json!({ "password": password }),
            )
            .await;
        let body = expect_json(response, StatusCode::OK).await;
        let secret = body["secret"].as_str().expect("secret").to_owned();
        let code = totp_code(&secret, self.now());
        let response = self
            .post_json_with_token(
                "/v1/me/mfa/totp/confirm",
                access_token,
                &json!({ "code": code }),
            )
            .await;
        let body = expect_json(response, StatusCode::OK).await;
        let recovery_codes = body["recovery_codes"]
            .as_array()
            .expect("recovery_codes")
            .iter()
            .map(|c| c.as_str().expect("a code").to_owned())
            .collect();
        self.advance(std::time::Duration::from_secs(30));
        Enrolled {
            secret,
            recovery_codes,
        }
    }

    /// The `mfa_token` a right password earns a user with MFA (asserting the 401).
    pub async fn mfa_token(&self, email: &str, password: &str) -> String {
        let body = expect_json(
            self.post_login(email, password).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert_eq!(body["error"], "mfa_required", "{body}");
        body["mfa_token"].as_str().expect("mfa_token").to_owned()
    }

    pub async fn post_login_mfa(&self, mfa_token: &str, code: &str) -> reqwest::Response {
        self.post_json(
            "/v1/login/mfa",
            &json!({ "mfa_token": mfa_token, "code": code }),
        )
        .await
    }

    /// Asserts that the login waiting behind `mfa_token` is void: at the next time step
    /// (so that the refusal cannot come from a code already claimed), the right code gets
    /// 401 `invalid_mfa_token`.
    pub async fn assert_mfa_token_void(&self, mfa_token: &str, secret: &str) {
        self.advance(std::time::Duration::from_secs(30));
        let code = totp_code(secret, self.now());
        crate::kit::contract::assert_error(
            self.post_login_mfa(mfa_token, &code).await,
            StatusCode::UNAUTHORIZED,
            "invalid_mfa_token",
        )
        .await;
    }

    /// Logs in with password and the current TOTP code.
    pub async fn login_with_totp(&self, email: &str, password: &str, secret: &str) -> Value {
        let token = self.mfa_token(email, password).await;
        let code = totp_code(secret, self.now());
        expect_json(self.post_login_mfa(&token, &code).await, StatusCode::OK).await
    }
}

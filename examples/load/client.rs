//! The HTTP client side: a target server, the accounts the workers use, one call per
//! operation, and the mix that picks the next operation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::stats::Recorder;
use crate::{PASSWORD, REQUEST_TIMEOUT};

#[derive(Clone, Debug)]
pub(crate) struct Account {
    pub(crate) email: String,
    pub(crate) access: String,
    pub(crate) refresh: String,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    refresh_token: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    Jwks,
    Jwks304,
    Me,
    Login,
    Refresh,
    Signup,
    /// Every operation of a run together (mixed).
    All,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Jwks => "jwks",
            Op::Jwks304 => "jwks-304",
            Op::Me => "me",
            Op::Login => "login",
            Op::Refresh => "refresh",
            Op::Signup => "signup",
            Op::All => "all",
        }
    }
}

pub(crate) struct Target {
    /// The server process, for its CPU time.
    pub(crate) pid: Option<u32>,
    /// The database server's processes for the run's database (`--postgres`).
    pub(crate) db: Option<std::sync::Arc<crate::pg::DbProbe>>,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) etag: String,
    pub(crate) tag: String,
}

pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(20))
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "io".into()
    }
}

impl Target {
    /// Runs one operation; `Ok(status)` once the whole body is read.
    pub(crate) async fn call(
        &self,
        op: Op,
        acct: &mut Account,
        counter: &mut u64,
    ) -> Result<u16, String> {
        let c = &self.client;
        let req = match op {
            Op::Jwks => c.get(format!("{}/.well-known/jwks.json", self.base)),
            Op::Jwks304 => c
                .get(format!("{}/.well-known/jwks.json", self.base))
                .header("if-none-match", &self.etag),
            Op::Me => c
                .get(format!("{}/v1/me", self.base))
                .bearer_auth(&acct.access),
            Op::Login => c
                .post(format!("{}/v1/login", self.base))
                .json(&json!({"email": acct.email, "password": PASSWORD})),
            Op::Refresh => c
                .post(format!("{}/v1/refresh", self.base))
                .json(&json!({"refresh_token": acct.refresh})),
            Op::All => return Err("no_op".into()),
            Op::Signup => {
                *counter += 1;
                let email = format!(
                    "{}-s{}@example.com",
                    acct.email.replace('@', "-at-"),
                    counter
                );
                c.post(format!("{}/v1/signup", self.base))
                    .json(&json!({"email": email, "password": PASSWORD}))
            }
        };
        let res = req.send().await.map_err(|e| transport_error(&e))?;
        let status = res.status().as_u16();
        let body = res.bytes().await.map_err(|e| transport_error(&e))?;
        if matches!(op, Op::Login | Op::Refresh) && status == 200 {
            let t: TokenBody = serde_json::from_slice(&body).map_err(|_| "bad_body".to_owned())?;
            acct.access = t.access_token;
            acct.refresh = t.refresh_token;
        }
        Ok(status)
    }

    /// A fresh account (signup), outside any measurement.
    pub(crate) async fn signup(&self, n: usize) -> anyhow::Result<Account> {
        let email = format!("load-{}-{n}@example.com", self.tag);
        let res = self
            .client
            .post(format!("{}/v1/signup", self.base))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await?;
        let status = res.status();
        let body = res.bytes().await?;
        anyhow::ensure!(
            status.as_u16() == 201,
            "signup answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let t: TokenBody = serde_json::from_slice(&body)?;
        Ok(Account {
            email,
            access: t.access_token,
            refresh: t.refresh_token,
        })
    }

    /// A chain broken by an error is restarted with a login (not measured).
    pub(crate) async fn recover(&self, acct: &mut Account) {
        let mut n = 0;
        let _ = self.call(Op::Login, acct, &mut n).await;
    }
}

/// Chooses the next operation of a worker.
#[derive(Clone, Copy)]
pub(crate) enum Mix {
    Only(Op),
    /// jwks 30 %, me 40 %, refresh 28 %, login 2 %.
    Mixed,
}

pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Mix {
    pub(crate) fn pick(self, rng: &mut Rng) -> Op {
        match self {
            Mix::Only(op) => op,
            Mix::Mixed => match rng.next() % 100 {
                0..30 => Op::Jwks,
                30..70 => Op::Me,
                70..98 => Op::Refresh,
                _ => Op::Login,
            },
        }
    }
}

pub(crate) type PerOp = BTreeMap<Op, Recorder>;

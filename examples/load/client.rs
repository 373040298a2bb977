//! The HTTP client side: a target server, the accounts the workers use, one call per
//! operation, and the mix that picks the next operation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// The server processes (one per replica), for their CPU time, summed.
    pub(crate) pids: Vec<u32>,
    /// A process beside the servers whose CPU is reported apart (`--side-pid`: a
    /// private redis-server).
    pub(crate) side_pid: Option<u32>,
    /// The database server's processes for the run's database (`--postgres`).
    pub(crate) db: Option<std::sync::Arc<crate::pg::DbProbe>>,
    /// One base URL and pooled client per replica; requests take them in turn. The
    /// balancing is the load tool's own, so no proxy's CPU or hop is in the figures.
    replicas: Vec<(String, reqwest::Client)>,
    next: AtomicUsize,
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
    /// A target of one server (`bases` of one) or of replicas, each with a client.
    pub(crate) fn new(
        pids: Vec<u32>,
        db: Option<std::sync::Arc<crate::pg::DbProbe>>,
        bases: &[String],
        etag: String,
        tag: String,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!bases.is_empty(), "a target needs a server");
        Ok(Self {
            pids,
            side_pid: None,
            db,
            replicas: bases
                .iter()
                .map(|b| Ok((b.clone(), client()?)))
                .collect::<anyhow::Result<_>>()?,
            next: AtomicUsize::new(0),
            etag,
            tag,
        })
    }

    /// Every replica's base URL.
    pub(crate) fn bases(&self) -> Vec<String> {
        self.replicas.iter().map(|(b, _)| b.clone()).collect()
    }

    /// The next replica, round-robin.
    fn pick(&self) -> (&str, &reqwest::Client) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.replicas.len();
        let (base, client) = &self.replicas[i];
        (base, client)
    }

    /// Runs one operation; `Ok(status)` once the whole body is read.
    pub(crate) async fn call(
        &self,
        op: Op,
        acct: &mut Account,
        counter: &mut u64,
    ) -> Result<u16, String> {
        let (base, c) = self.pick();
        let req = match op {
            Op::Jwks => c.get(format!("{}/.well-known/jwks.json", base)),
            Op::Jwks304 => c
                .get(format!("{}/.well-known/jwks.json", base))
                .header("if-none-match", &self.etag),
            Op::Me => c.get(format!("{}/v1/me", base)).bearer_auth(&acct.access),
            Op::Login => c
                .post(format!("{}/v1/login", base))
                .json(&json!({"email": acct.email, "password": PASSWORD})),
            Op::Refresh => c
                .post(format!("{}/v1/refresh", base))
                .json(&json!({"refresh_token": acct.refresh})),
            Op::All => return Err("no_op".into()),
            Op::Signup => {
                *counter += 1;
                let email = format!(
                    "{}-s{}@example.com",
                    acct.email.replace('@', "-at-"),
                    counter
                );
                c.post(format!("{}/v1/signup", base))
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
        let (base, c) = self.pick();
        let res = c
            .post(format!("{base}/v1/signup"))
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

//! The load: workers that play clients, each remembering what the server told it
//! (accounts confirmed, refresh chains received), so the harness can hold the database
//! to it after every crash.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::kit::body::sid_in;
use crate::kit::password::PASSWORD;
use crate::kit::process::{self};
use crate::kit::rng::Rng;

#[derive(Clone, Debug)]
pub(super) enum Signup {
    /// The client got a 201 (or confirmed a lost answer with a login) at this moment.
    Confirmed(Instant),
    /// The request was sent and its answer lost in a crash.
    Uncertain,
}

#[derive(Clone, Debug)]
pub(super) struct User {
    pub(super) email: String,
    pub(super) signup: Signup,
}

#[derive(Clone, Debug)]
pub(super) struct Tok {
    pub(super) value: String,
    pub(super) received: Instant,
    /// When the client first presented it (to refresh it).
    pub(super) presented: Option<Instant>,
}

#[derive(Clone, Debug)]
pub(super) struct Chain {
    pub(super) family: String,
    pub(super) access: String,
    pub(super) tokens: Vec<Tok>,
    /// The last refresh was sent and its answer lost: the newest token may be spent.
    pub(super) uncertain: bool,
    /// Ever had a lost answer (the only case where a revoked family is expected).
    pub(super) had_uncertain: bool,
    /// Revoked for reuse after a lost answer's retry came too late: no longer used.
    pub(super) revoked: bool,
}

impl Chain {
    pub(super) fn new(body: &Value, now: Instant) -> Result<Self, String> {
        let access = body["access_token"]
            .as_str()
            .ok_or_else(|| format!("no access_token in {body}"))?;
        let refresh = body["refresh_token"]
            .as_str()
            .ok_or_else(|| format!("no refresh_token in {body}"))?;
        Ok(Self {
            family: sid_in(access).ok_or("access token without sid")?,
            access: access.to_owned(),
            tokens: vec![Tok {
                value: refresh.to_owned(),
                received: now,
                presented: None,
            }],
            uncertain: false,
            had_uncertain: false,
            revoked: false,
        })
    }

    pub(super) fn newest(&self) -> &Tok {
        self.tokens.last().expect("a chain has a token")
    }
}

#[derive(Default, Debug, Clone, Copy)]
pub(super) struct Stats {
    pub(super) signups: u64,
    pub(super) logins: u64,
    pub(super) refreshes: u64,
    pub(super) reads: u64,
    pub(super) lost_answers: u64,
    pub(super) lost_signups_confirmed_by_login: u64,
    pub(super) revoked_after_lost_answer: u64,
}

impl Stats {
    pub(super) fn add(&mut self, o: &Stats) {
        self.signups += o.signups;
        self.logins += o.logins;
        self.refreshes += o.refreshes;
        self.reads += o.reads;
        self.lost_answers += o.lost_answers;
        self.lost_signups_confirmed_by_login += o.lost_signups_confirmed_by_login;
        self.revoked_after_lost_answer += o.revoked_after_lost_answer;
    }
}

pub(super) struct Worker {
    pub(super) id: usize,
    pub(super) rng: Rng,
    pub(super) serial: u64,
    pub(super) users: Vec<User>,
    pub(super) chains: Vec<Chain>,
    pub(super) stats: Stats,
    pub(super) violations: Vec<String>,
}

/// A transport failure: the server went away (or never answered).
pub(super) struct Lost(pub(super) String);

impl Worker {
    pub(super) fn new(id: usize, seed: u64) -> Self {
        Self {
            id,
            rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            serial: 0,
            users: Vec::new(),
            chains: Vec::new(),
            stats: Stats::default(),
            violations: Vec::new(),
        }
    }

    pub(super) async fn post(
        client: &reqwest::Client,
        url: String,
        body: Value,
    ) -> Result<(StatusCode, Value), Lost> {
        let response = client
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| Lost(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| Lost(e.to_string()))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Runs one server life: requests until the server is killed.
    pub(super) async fn run(mut self, base: String, stop: Arc<AtomicBool>) -> Self {
        let client = process::client();
        while !stop.load(Ordering::SeqCst) {
            if let Err(Lost(e)) = self.step(&client, &base).await {
                if !stop.load(Ordering::SeqCst) {
                    self.violations.push(format!(
                        "worker {}: transport error while the server was up: {e}",
                        self.id
                    ));
                }
                break;
            }
        }
        self
    }

    pub(super) async fn step(&mut self, client: &reqwest::Client, base: &str) -> Result<(), Lost> {
        // Lost answers first: the client retries what it does not know the fate of.
        if let Some(i) = self
            .users
            .iter()
            .position(|u| matches!(u.signup, Signup::Uncertain))
        {
            return self.signup(client, base, Some(i)).await;
        }
        if let Some(i) = self.chains.iter().position(|c| c.uncertain && !c.revoked) {
            return self.refresh(client, base, i).await;
        }
        let live: Vec<usize> = (0..self.chains.len())
            .filter(|&i| !self.chains[i].revoked)
            .collect();
        let roll = self.rng.below(100);
        if roll < 15 || self.users.is_empty() {
            self.signup(client, base, None).await
        } else if roll < 30 || live.is_empty() {
            let i = self.rng.below(self.users.len() as u64) as usize;
            self.login(client, base, i).await
        } else if roll < 92 {
            let i = live[self.rng.below(live.len() as u64) as usize];
            self.refresh(client, base, i).await
        } else {
            let i = live[self.rng.below(live.len() as u64) as usize];
            self.me(client, base, i).await
        }
    }

    pub(super) async fn signup(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        retry: Option<usize>,
    ) -> Result<(), Lost> {
        let i = match retry {
            Some(i) => i,
            None => {
                self.serial += 1;
                let email = format!(
                    "crash-w{}-{}-{}@example.com",
                    self.id,
                    self.serial,
                    self.rng.below(1 << 40)
                );
                self.users.push(User {
                    email,
                    signup: Signup::Uncertain,
                });
                self.users.len() - 1
            }
        };
        let email = self.users[i].email.clone();
        let body = json!({"email": email, "password": PASSWORD});
        let result = Self::post(client, format!("{base}/v1/signup"), body).await;
        let (status, body) = result.inspect_err(|_| self.stats.lost_answers += 1)?;
        match status {
            StatusCode::CREATED => {
                self.users[i].signup = Signup::Confirmed(Instant::now());
                self.stats.signups += 1;
                self.add_chain(&body, "signup");
            }
            StatusCode::CONFLICT if retry.is_some() => {
                // The lost signup had committed: the account must accept its password.
                let login = json!({"email": email, "password": PASSWORD});
                let (status, body) = Self::post(client, format!("{base}/v1/login"), login).await?;
                if status == StatusCode::OK {
                    self.users[i].signup = Signup::Confirmed(Instant::now());
                    self.stats.lost_signups_confirmed_by_login += 1;
                    self.add_chain(&body, "login");
                } else {
                    self.violations.push(format!(
                        "{email}: signup answered 409 after a lost answer, but login answered {status}: {body}"
                    ));
                    self.users.remove(i);
                }
            }
            other => {
                self.violations
                    .push(format!("{email}: signup answered {other}: {body}"));
                self.users.remove(i);
            }
        }
        Ok(())
    }

    pub(super) async fn login(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        i: usize,
    ) -> Result<(), Lost> {
        let email = self.users[i].email.clone();
        if !matches!(self.users[i].signup, Signup::Confirmed(_)) {
            return Ok(());
        }
        let body = json!({"email": email, "password": PASSWORD});
        let (status, body) = Self::post(client, format!("{base}/v1/login"), body)
            .await
            .inspect_err(|_| self.stats.lost_answers += 1)?;
        if status == StatusCode::OK {
            self.stats.logins += 1;
            self.add_chain(&body, "login");
        } else {
            self.violations.push(format!(
                "{email}: login of a confirmed account answered {status}: {body}"
            ));
        }
        Ok(())
    }

    pub(super) fn add_chain(&mut self, body: &Value, what: &str) {
        match Chain::new(body, Instant::now()) {
            Ok(chain) => self.chains.push(chain),
            Err(e) => self
                .violations
                .push(format!("{what}: bad token response: {e}")),
        }
    }

    pub(super) async fn refresh(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        i: usize,
    ) -> Result<(), Lost> {
        let token = self.chains[i].newest().value.clone();
        let now = Instant::now();
        let newest = self.chains[i].tokens.last_mut().expect("token");
        newest.presented.get_or_insert(now);
        let body = json!({"refresh_token": token});
        let result = Self::post(client, format!("{base}/v1/refresh"), body).await;
        let chain = &mut self.chains[i];
        let (status, body) = match result {
            Ok(answer) => answer,
            Err(lost) => {
                chain.uncertain = true;
                chain.had_uncertain = true;
                self.stats.lost_answers += 1;
                return Err(lost);
            }
        };
        let was_uncertain = std::mem::replace(&mut chain.uncertain, false);
        match (status, body["error"].as_str()) {
            (StatusCode::OK, _) => {
                let (Some(access), Some(refresh)) = (
                    body["access_token"].as_str(),
                    body["refresh_token"].as_str(),
                ) else {
                    self.violations
                        .push(format!("refresh 200 without tokens: {body}"));
                    return Ok(());
                };
                if refresh == token {
                    self.violations
                        .push(format!("refresh returned the presented token: {body}"));
                }
                if sid_in(access).as_deref() != Some(chain.family.as_str()) {
                    self.violations.push(format!(
                        "refresh of family {} returned an access token of another family",
                        chain.family
                    ));
                }
                chain.access = access.to_owned();
                chain.tokens.push(Tok {
                    value: refresh.to_owned(),
                    received: Instant::now(),
                    presented: None,
                });
                self.stats.refreshes += 1;
            }
            (StatusCode::UNAUTHORIZED, Some("refresh_token_reused")) if was_uncertain => {
                // The lost rotation had committed and the retry came after the grace:
                // reuse, the family is revoked. Allowed, and counted.
                chain.revoked = true;
                self.stats.revoked_after_lost_answer += 1;
            }
            (status, _) => {
                chain.revoked = true;
                self.violations.push(format!(
                    "family {}: a refresh token received in a 200 answered {status}: {body} \
                     (retry after a lost answer: {was_uncertain})",
                    chain.family
                ));
            }
        }
        Ok(())
    }

    pub(super) async fn me(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        i: usize,
    ) -> Result<(), Lost> {
        let access = self.chains[i].access.clone();
        let response = client
            .get(format!("{base}/v1/me"))
            .bearer_auth(&access)
            .send()
            .await
            .map_err(|e| Lost(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| Lost(e.to_string()))?;
        if status == StatusCode::OK {
            self.stats.reads += 1;
        } else {
            self.violations.push(format!(
                "GET /v1/me with a fresh access token answered {status}: {text}"
            ));
        }
        Ok(())
    }
}

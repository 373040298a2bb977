//! Round trips of the hot paths, counted by a relaying proxy.

use super::*;

/// Relays one PostgreSQL connection at a time and counts what the client sends: each
/// flush of the client is one request the server must answer before the client goes
/// on, so the count between two points is the round trips taken.
struct CountingProxy {
    port: u16,
    sends: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingProxy {
    fn start(upstream: std::net::SocketAddr) -> Self {
        use std::io::{Read as _, Write as _};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sends = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&sends);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                type Counter = Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>;
                let pump = |mut from: TcpStream, mut to: TcpStream, count: Counter| {
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 1 << 16];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if let Some(c) = &count {
                                c.fetch_add(1, Ordering::SeqCst);
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    })
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                pump(client, server, Some(std::sync::Arc::clone(&counter)));
                pump(s2, c2, None);
            }
        });
        Self { port, sends }
    }

    fn take(&self) -> usize {
        self.sends.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

/// The round trips the hot paths cost on PostgreSQL (issue 12: at most two per refresh): a refresh
/// is a read and a claim, a login's family one statement, an access check one read.
/// Prepared, the first call of each statement on a connection takes one more, to prepare
/// it, and no later call does.
#[test]
fn hot_paths_take_one_round_trip_per_store_call() {
    round_trips_of_the_hot_paths("hot_paths_take_one_round_trip_per_store_call", true);
}

#[test]
fn hot_paths_take_one_round_trip_per_store_call_unprepared() {
    round_trips_of_the_hot_paths("hot_paths_unprepared", false);
}

fn round_trips_of_the_hot_paths(test: &str, prepared: bool) {
    use chrono::{Duration as Days, Utc};
    use gatehouse::domain::{AuditKind, Email, FamilyId, Role, UserId};
    use gatehouse::storage::{AuditEvent, Lease, LeaseId, NewFamily, NewUser, Settle, Spend};

    let Some(db) = TestDatabase::new(test) else {
        return;
    };
    let url = db.url();
    let host = url.config().get_hosts().first().cloned();
    let port = url.config().get_ports().first().copied().unwrap_or(5432);
    let upstream = match host {
        Some(postgres::config::Host::Tcp(h)) => {
            std::net::ToSocketAddrs::to_socket_addrs(&(h.as_str(), port))
                .ok()
                .and_then(|mut a| a.next())
        }
        _ => None,
    };
    let Some(upstream) = upstream.filter(|_| url.config().get_password().is_none()) else {
        loud(
            "the test server is not reached over TCP without a password: round trips are \
             NOT counted",
        );
        return;
    };
    let proxy = CountingProxy::start(upstream);
    let proxied = format!(
        "postgres://{}@127.0.0.1:{}/{}?sslmode=disable",
        url.config().get_user().unwrap_or("postgres"),
        proxy.port,
        db.name
    );
    let store = storage::open(&DatabaseSettings::Postgres {
        url: Box::new(PostgresUrl::parse(&proxied).expect("URL")),
        pool_size: 1,
        connect_timeout: Duration::from_secs(5),
        start_timeout: Duration::ZERO,
        prepared_statements: prepared,
    })
    .expect("open through the proxy");

    // The same calls twice on the pool's one connection: the first round prepares.
    for round in 0..2u8 {
        let first = round == 0;
        let now = Utc::now();
        let email = Email::parse(&format!("trips{round}@example.com")).expect("email");
        let user = store
            .create_user(NewUser {
                id: UserId::random(),
                email: &email,
                password_hash: "x",
                role: Role::User,
                now,
            })
            .expect("user");
        proxy.take();

        // `statements`: how many texts the call runs, each prepared on its first call.
        let count = |what: &str, expected: usize, statements: usize| {
            let taken = proxy.take();
            let prepares = if prepared && first { statements } else { 0 };
            assert_eq!(
                taken,
                expected + prepares,
                "{what}: round trips (round {round}, prepared: {prepared})"
            );
        };
        let keys = [
            format!("email:trips{round}@example.com"),
            "ip:unknown".to_owned(),
        ];
        let lease = Lease {
            id: LeaseId::random(),
            keys: keys.to_vec(),
            window_secs: 600,
            now,
            ttl: Days::seconds(60),
        };
        assert!(
            store
                .reserve_attempt(&lease, &|_| true)
                .expect("reserve")
                .leased
        );
        // BEGIN, the per-key locks, the read, the lease's insert, COMMIT.
        count("reserve_attempt", 5, 3);
        store.login_failures(&keys, 600, now).expect("lockout");
        count("login_failures", 1, 1);
        store.account_by_email(&email).expect("account");
        count("account_by_email", 1, 1);
        let family = FamilyId::random();
        let (token, child) = ([1 + 2 * round; 32], [2 + 2 * round; 32]);
        assert!(
            store
                .create_family(NewFamily {
                    id: family,
                    user_id: user.id,
                    first_token: token,
                    now,
                    token_expires_at: now + Days::hours(1),
                    family_expires_at: now + Days::days(1),
                    user_agent: None,
                    ip: None,
                    password_generation: 0,
                    opened_by: AuditEvent::new(now, AuditKind::LoginSucceeded, "ok"),
                    forgives: None,
                    settles: Some(lease.id),
                    amr: gatehouse::domain::Amr::Pwd,
                })
                .expect("family")
        );
        count("create_family", 1, 1);
        store
            .record_audit(AuditEvent::new(now, AuditKind::LoginSucceeded, "ok"))
            .expect("audit");
        count("record_audit", 1, 1);
        store.find_refresh_token(token).expect("find");
        count("find_refresh_token", 1, 1);
        assert!(
            store
                .spend_refresh_token(Spend {
                    presented: token,
                    child,
                    family_id: family,
                    now,
                    child_expires_at: now + Days::hours(1),
                })
                .expect("spend")
        );
        count("spend_refresh_token", 1, 1);
        store
            .account_for_session(user.id, family, now)
            .expect("session");
        count("account_for_session", 1, 1);
        let failing = LeaseId::random();
        let failed = Settle::Failed {
            keys: &keys,
            window_secs: 600,
            now,
        };
        store.settle_attempt(failing, failed).expect("settle");
        count("settle_attempt", 1, 1);
    }
}

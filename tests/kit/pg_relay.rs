//! A TCP relay between gatehouse and PostgreSQL that can lose a connection at the worst
//! moment: right after it forwarded the statement that commits, before the server's
//! answer comes back. The server commits; gatehouse never learns it did. That is what a
//! failover or a network cut does to a write in flight, made exact.
//!
//! It reads the protocol in plain text, so the server must not use TLS (the private
//! server's `initdb` default) and statements must be sent with their text
//! (`GATEHOUSE_DB_PREPARED_STATEMENTS=off`: a prepared one is sent by name only).

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct Relay {
    pub port: u16,
    /// The bytes that arm the cut: the next client message holding them is forwarded,
    /// then its connection is cut both ways without the server's answer.
    armed: Arc<Mutex<Option<Vec<u8>>>>,
    cuts: Arc<AtomicUsize>,
}

/// How long each chunk from the server waits before it is passed on (zero: none).
type Delay = std::time::Duration;

impl Relay {
    /// Relays every connection to `127.0.0.1:upstream`, each on threads of its own.
    pub fn start(upstream: u16) -> Self {
        Self::start_delayed(upstream, Delay::ZERO)
    }

    /// [`Relay::start`], holding what the server sends for `delay` before passing it on:
    /// between a primary and its standby, a walsender that lags by about that much.
    pub fn start_delayed(upstream: u16, delay: Delay) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let armed: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let cuts = Arc::new(AtomicUsize::new(0));
        let (a, c) = (armed.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                relay(client, server, a.clone(), c.clone(), delay);
            }
        });
        Self { port, armed, cuts }
    }

    /// Cuts the connection that next sends a message holding `marker`.
    pub fn cut_after(&self, marker: &[u8]) {
        *self.armed.lock().expect("relay lock") = Some(marker.to_vec());
    }

    /// How many connections were cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<Mutex<Option<Vec<u8>>>>,
    cuts: Arc<AtomicUsize>,
    delay: Delay,
) {
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    // Set before the marked message goes out, so not a byte of its answer comes back.
    let cut = Arc::new(AtomicBool::new(false));
    let (Ok(client_w), Ok(server_r)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let (cut, mut from, mut to) = (cut.clone(), client, server);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                let hit = {
                    let mut armed = armed.lock().expect("relay lock");
                    let hit = armed
                        .as_ref()
                        .is_some_and(|m| buf[..n].windows(m.len()).any(|w| w == &m[..]));
                    if hit {
                        *armed = None;
                    }
                    hit
                };
                if hit {
                    cut.store(true, Ordering::SeqCst);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if hit {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            // Not the server's side at once: closing it could reach the server before
            // it ran the statement, and it would roll back instead of commit.
            std::thread::sleep(std::time::Duration::from_millis(500));
            let _ = to.shutdown(Shutdown::Both);
        });
    }
    let (mut from, mut to) = (server_r, client_w);
    if !delay.is_zero() {
        return lagging(from, to, delay);
    }
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// Passes on what `from` sends `delay` after it came, and drops what is still held when
/// `from` goes away: like a sender that lagged, what it had not sent dies with it.
fn lagging(mut from: TcpStream, mut to: TcpStream, delay: std::time::Duration) {
    let gone = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<(std::time::Instant, Vec<u8>)>();
    {
        let gone = gone.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if tx
                    .send((std::time::Instant::now(), buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
            gone.store(true, Ordering::SeqCst);
        });
    }
    std::thread::spawn(move || {
        for (at, chunk) in rx {
            std::thread::sleep((at + delay).saturating_duration_since(std::time::Instant::now()));
            if gone.load(Ordering::SeqCst) || to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

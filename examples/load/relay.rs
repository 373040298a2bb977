//! A TCP relay between gatehouse and PostgreSQL that counts round trips: the driver
//! flushes each request (a statement with its Sync, a BEGIN, a COMMIT) in one write and
//! then waits for the answer, so each read of the client side is one round trip. The
//! same idea as the store suite's relay (tests/store/postgres_only.rs), which counts
//! store calls; this one counts whole HTTP requests of the real binary.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub(crate) struct CountingRelay {
    pub(crate) port: u16,
    sends: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl CountingRelay {
    /// Listens on a free loopback port and relays every connection to `upstream`, each
    /// direction on a thread of its own.
    pub(crate) fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let sends = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, stopping) = (Arc::clone(&sends), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("pg-relay".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                        continue;
                    };
                    pump(client, server, Some(Arc::clone(&counter)));
                    pump(s2, c2, None);
                }
            })?;
        Ok(Self { port, sends, stop })
    }

    /// Requests sent to PostgreSQL so far.
    pub(crate) fn sends(&self) -> u64 {
        self.sends.load(Ordering::SeqCst)
    }
}

impl Drop for CountingRelay {
    /// Stops accepting: the listener thread wakes on one last connection of ours. The
    /// relayed connections end when the server that opened them exits.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>) {
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
    });
}

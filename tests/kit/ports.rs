//! Loopback ports for servers that must be told where to listen.

/// A port nobody listens on right now. The kernel may hand it to someone else before the
/// server binds it: callers that start a server retry on "cannot listen".
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind a loopback port")
        .port()
}

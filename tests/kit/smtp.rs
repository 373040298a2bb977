//! A real SMTP server for the mail tests: tokio, TCP on a free loopback port, the
//! commands a client sends (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), every
//! delivered message kept for the test to read. It can be told to refuse connections,
//! to answer the next mails with a temporary (421/451) or permanent (550) failure, or
//! to drop the connection in the middle of DATA.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A message as it arrived.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body, dot-unstuffed, lines joined by CRLF.
    pub data: String,
}

impl Delivered {
    /// The value of header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut()
                && (line.starts_with(' ') || line.starts_with('\t'))
            {
                v.push_str(line.trim_start());
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }

    /// The message with quoted-printable soft line breaks and escapes undone (what a mail
    /// reader shows; 7-bit parts come through unchanged).
    pub fn decoded(&self) -> String {
        let joined = self.data.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The plain-text part, decoded.
    pub fn text_part(&self) -> String {
        let decoded = self.decoded();
        let start = decoded
            .find("Content-Type: text/plain")
            .expect("the mail has no text/plain part");
        let body = &decoded[start..];
        let body = &body[body.find("\r\n\r\n").map_or(0, |i| i + 4)..];
        body.split("\r\n--").next().unwrap_or(body).to_owned()
    }

    /// The `token` query parameter of the first link in the plain-text part, as a user
    /// following the link would hand it to the app.
    pub fn token(&self) -> String {
        let text = self.text_part();
        let at = text
            .find("token=")
            .expect("the mail's text has no token link")
            + 6;
        text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '%' | '.' | '~'))
            .collect()
    }
}

/// What the server does with the next mails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `421` to MAIL, then the connection closes (the server is going away).
    Unavailable421,
    /// `451` to MAIL (try again later).
    Later451,
    /// `550` to RCPT (no such mailbox): permanent.
    Rejected550,
    /// The connection closes after the first line of DATA, without a reply.
    DropMidData,
}

#[derive(Default)]
struct Inner {
    delivered: Vec<Delivered>,
    /// Each MAIL command seen, delivered or not.
    attempts: u32,
    faults: Vec<Fault>,
    /// Answer every mail with this, until cleared.
    always: Option<Fault>,
}

pub struct SmtpServer {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the test SMTP server");
        let port = listener.local_addr().expect("local addr").port();
        let server = Self {
            port,
            inner: Arc::default(),
            arrived: Arc::new(Notify::new()),
            listener: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    /// `smtp://127.0.0.1:PORT`, no TLS (loopback).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn serve(&self, listener: TcpListener) {
        let (inner, arrived) = (self.inner.clone(), self.arrived.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (inner, arrived) = (inner.clone(), arrived.clone());
                tokio::spawn(async move {
                    let _ = session(stream, inner, arrived).await;
                });
            }
        });
        *self.listener.lock().unwrap() = Some(task);
    }

    /// Closes the listening socket: connections are refused until [`SmtpServer::accept`].
    pub fn refuse(&self) {
        if let Some(task) = self.listener.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn accept(&self) {
        for _ in 0..100 {
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", self.port)).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot listen on port {} again", self.port);
    }

    /// The next mails meet these faults, one each, in order.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.inner.lock().unwrap().faults.extend_from_slice(faults);
    }

    /// Every mail meets `fault` until called with `None`.
    pub fn fail_always(&self, fault: Option<Fault>) {
        self.inner.lock().unwrap().always = fault;
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        self.inner.lock().unwrap().delivered.clone()
    }

    /// MAIL commands seen (each attempt to send, delivered or not).
    pub fn attempts(&self) -> u32 {
        self.inner.lock().unwrap().attempts
    }

    /// Waits until at least `n` messages were delivered; panics after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Delivered> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.arrived.notified();
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.delivered();
                assert!(
                    got.len() >= n,
                    "expected {n} delivered mails within {within:?}, got {}",
                    got.len()
                );
                return got;
            }
        }
    }

    /// The newest mail to `to`, waiting for one up to `within`.
    pub async fn mail_to(&self, to: &str, within: Duration) -> Delivered {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.arrived.notified();
            if let Some(m) = self
                .delivered()
                .into_iter()
                .rev()
                .find(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            {
                return m;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no mail to {to} within {within:?}");
            }
        }
    }

    /// How many mails to `to` arrived.
    pub fn count_to(&self, to: &str) -> usize {
        self.delivered()
            .iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            .count()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.refuse();
    }
}

fn address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg.rfind('>').unwrap_or(arg.len());
    arg[start..end.max(start)].to_owned()
}

async fn session(
    stream: TcpStream,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 gatehouse-test ESMTP\r\n").await?;
    let (mut from, mut to, mut fault) = (String::new(), Vec::<String>::new(), None);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-gatehouse-test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" => b"250 gatehouse-test\r\n",
            "MAIL" => {
                fault = {
                    let mut i = inner.lock().unwrap();
                    i.attempts += 1;
                    if i.faults.is_empty() {
                        i.always
                    } else {
                        Some(i.faults.remove(0))
                    }
                };
                from = address(command.split_once(':').map_or("", |(_, a)| a));
                to.clear();
                match fault {
                    Some(Fault::Unavailable421) => {
                        write
                            .write_all(b"421 4.3.2 service shutting down\r\n")
                            .await?;
                        return Ok(());
                    }
                    Some(Fault::Later451) => {
                        fault = None;
                        b"451 4.3.0 try again later\r\n"
                    }
                    _ => b"250 2.1.0 ok\r\n",
                }
            }
            "RCPT" => {
                if fault == Some(Fault::Rejected550) {
                    b"550 5.1.1 no such mailbox\r\n"
                } else {
                    to.push(address(command.split_once(':').map_or("", |(_, a)| a)));
                    b"250 2.1.5 ok\r\n"
                }
            }
            "DATA" if to.is_empty() => b"554 5.5.1 no valid recipients\r\n",
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if fault == Some(Fault::DropMidData) {
                        // Killed mid-DATA: no reply, no message.
                        return Ok(());
                    }
                    let l = line.trim_end_matches(['\r', '\n']);
                    if l == "." {
                        break;
                    }
                    data.push(l.strip_prefix('.').unwrap_or(l).to_owned());
                }
                inner.lock().unwrap().delivered.push(Delivered {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data: data.join("\r\n"),
                });
                arrived.notify_waiters();
                b"250 2.0.0 queued\r\n"
            }
            "RSET" => {
                to.clear();
                fault = None;
                b"250 2.0.0 ok\r\n"
            }
            "NOOP" => b"250 2.0.0 ok\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"500 5.5.2 unknown command\r\n",
        };
        write.write_all(reply).await?;
    }
}

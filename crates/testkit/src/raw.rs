//! A raw HTTP/1.1 upstream for request-integrity tests: it records every byte the proxy
//! sends, connection by connection, and answers each request with fixed bytes. Nothing
//! is parsed beyond the framing needed to know where a request ends, so what the
//! assertions read is exactly what reached the upstream's socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The default answer: a complete 200 on a connection that stays open.
pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// The bytes one connection received, shared with its reader task.
type Recording = Arc<Mutex<Vec<u8>>>;

/// A recording raw upstream on loopback.
pub struct RawUpstream {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<Recording>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawUpstream {
    /// Answers every request with [`OK`].
    pub async fn start() -> Self {
        Self::answering(OK).await
    }

    /// Answers every request with `response`.
    pub async fn answering(response: &'static [u8]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<Recording>>> = Arc::default();
        let all = conns.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let rec: Recording = Arc::default();
                all.lock().unwrap().push(rec.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 16384];
                    let mut answered = 0;
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let complete = {
                            let mut r = rec.lock().unwrap();
                            r.extend_from_slice(&buf[..n]);
                            complete_requests(&r)
                        };
                        while answered < complete {
                            answered += 1;
                            if s.write_all(response).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, conns, task }
    }

    /// The bytes received on each connection so far, in accept order.
    pub fn connections(&self) -> Vec<Vec<u8>> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }

    /// Everything received, all connections, as text.
    pub fn received(&self) -> String {
        self.connections()
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }

    /// The requests received (complete or not), each as its header block and body, split
    /// the way a strict HTTP/1.1 server would.
    pub fn requests(&self) -> Vec<RawRequest> {
        let mut out = Vec::new();
        for c in self.connections() {
            let mut rest = &c[..];
            while !rest.is_empty() {
                let Some(end) = find(rest, b"\r\n\r\n") else {
                    out.push(RawRequest::parse(rest, &[]));
                    break;
                };
                let head = &rest[..end + 4];
                let len = body_len(head, &rest[end + 4..]);
                let body_end = (end + 4 + len).min(rest.len());
                out.push(RawRequest::parse(head, &rest[end + 4..body_end]));
                rest = &rest[body_end..];
            }
        }
        out
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// `GET /x HTTP/1.1`
    pub request_line: String,
    /// Header lines as received (name and value, unaltered).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The header block exactly as received.
    pub head: Vec<u8>,
}

impl RawRequest {
    fn parse(head: &[u8], body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_owned(), v.trim().to_owned()),
                None => (l.to_owned(), String::new()),
            })
            .collect();
        Self {
            request_line,
            headers,
            body: body.to_vec(),
            head: head.to_vec(),
        }
    }

    /// Every value of header `name` (case-insensitive), one per line received.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of header `name`; panics if it came more than once.
    pub fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "{name} received {} times: {all:?}",
            all.len()
        );
        all.first().copied()
    }
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

/// Body length of a request whose header block is `head`: Content-Length, or a chunked
/// body up to its last chunk, or 0.
fn body_len(head: &[u8], after: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    if text.contains("\r\ntransfer-encoding:") {
        return find(after, b"0\r\n\r\n").map_or(after.len(), |i| i + 5);
    }
    text.split("\r\n")
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// How many requests `bytes` holds completely.
fn complete_requests(bytes: &[u8]) -> usize {
    let mut n = 0;
    let mut rest = bytes;
    while let Some(end) = find(rest, b"\r\n\r\n") {
        let len = body_len(&rest[..end + 4], &rest[end + 4..]);
        if rest.len() < end + 4 + len {
            break;
        }
        n += 1;
        rest = &rest[end + 4 + len..];
    }
    n
}

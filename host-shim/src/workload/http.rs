//! A minimal HTTP/1.1 keep-alive client for loopback load: one connection,
//! one request at a time, `Content-Length` or chunked bodies. Small enough
//! to cost the load generator little CPU beside the host it measures.

use std::{io, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// A request that takes longer than this fails (the load generator must
/// stop by itself even if the host hangs).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    line: String,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None, line: String::new() }
    }

    pub async fn get(&mut self, path: &str, user: &str) -> io::Result<Response> {
        self.request("GET", path, user, None).await
    }

    pub async fn post_json(&mut self, path: &str, user: &str, body: &[u8]) -> io::Result<Response> {
        self.request("POST", path, user, Some(body)).await
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        user: &str,
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, user, body)).await {
            Ok(result) => result,
            Err(_) => {
                self.conn = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {REQUEST_TIMEOUT:?}")))
            }
        }
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        user: &str,
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nhost: {}\r\nx-context-user: {user}\r\n", self.addr);
        if let Some(body) = body {
            head.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        // A kept-alive connection the server closed meanwhile fails before
        // any answer byte: then, and only then, retry once on a new one.
        let reused = self.conn.is_some();
        match self.attempt(head.as_bytes(), body).await {
            Ok(response) => Ok(response),
            Err((e, answered)) if reused && !answered => {
                tracing::debug!("retrying on a new connection after: {e}");
                self.attempt(head.as_bytes(), body).await.map_err(|(e, _)| e)
            }
            Err((e, _)) => Err(e),
        }
    }

    async fn attempt(&mut self, head: &[u8], body: Option<&[u8]>) -> Result<Response, (io::Error, bool)> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await.map_err(|e| (e, false))?;
            stream.set_nodelay(true).map_err(|e| (e, false))?;
            self.conn = Some(BufReader::with_capacity(16 * 1024, stream));
        }
        let result = self.send_and_read(head, body).await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn send_and_read(
        &mut self,
        head: &[u8],
        body: Option<&[u8]>,
    ) -> Result<Response, (io::Error, bool)> {
        let conn = self.conn.as_mut().expect("connected");
        let stream = conn.get_mut();
        stream.write_all(head).await.map_err(|e| (e, false))?;
        if let Some(body) = body {
            stream.write_all(body).await.map_err(|e| (e, false))?;
        }
        self.line.clear();
        let n = conn.read_line(&mut self.line).await.map_err(|e| (e, false))?;
        if n == 0 {
            return Err((io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"), false));
        }
        let status = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| (bad(format!("bad status line '{}'", self.line.trim_end())), true))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            self.line.clear();
            conn.read_line(&mut self.line).await.map_err(|e| (e, true))?;
            let line = self.line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                self.line.clear();
                conn.read_line(&mut self.line).await.map_err(|e| (e, true))?;
                let size = self.line.trim_end().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| (bad(format!("bad chunk size '{size}'")), true))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        self.line.clear();
                        conn.read_line(&mut self.line).await.map_err(|e| (e, true))?;
                        if self.line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                conn.read_exact(&mut body[start..]).await.map_err(|e| (e, true))?;
                let mut crlf = [0u8; 2];
                conn.read_exact(&mut crlf).await.map_err(|e| (e, true))?;
            }
        } else if let Some(length) = length {
            body.resize(length, 0);
            conn.read_exact(&mut body).await.map_err(|e| (e, true))?;
        } else {
            conn.read_to_end(&mut body).await.map_err(|e| (e, true))?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok(Response { status, body })
    }
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Percent-encodes a query-string value (everything but unreserved bytes).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The socket address of a `http://127.0.0.1:PORT` (or `localhost`) URL.
/// Anything else is refused: load is only ever sent to this machine.
pub fn loopback_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("url '{url}' must start with http:// (loopback only)"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("url '{url}' needs a port (http://127.0.0.1:PORT)"))?;
    let port: u16 = port.parse().map_err(|_| format!("bad port '{port}' in url '{url}'"))?;
    match host {
        "127.0.0.1" | "localhost" => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        other => Err(format!("refusing to send load to '{other}': only 127.0.0.1 is allowed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_are_accepted() {
        assert_eq!(loopback_addr("http://127.0.0.1:8080").unwrap().port(), 8080);
        assert_eq!(loopback_addr("http://localhost:9/x").unwrap().to_string(), "127.0.0.1:9");
        assert!(loopback_addr("http://10.0.0.1:80").unwrap_err().contains("only 127.0.0.1"));
        assert!(loopback_addr("https://127.0.0.1:80").is_err());
        assert!(loopback_addr("http://127.0.0.1").is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode(r"fn\s+a_[b]"), "fn%5Cs%2Ba_%5Bb%5D");
        assert_eq!(encode("a b"), "a%20b");
    }

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_and_survives_a_closed_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // First connection: a sized answer, a chunked one, then closed.
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await.unwrap();
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .await
                .unwrap();
            drop(s);
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
        });
        let mut client = Client::new(addr);
        let r = client.get("/a", "u").await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = client.get("/b", "u").await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        let r = client.post_json("/c", "u", b"{}").await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"ok"[..]));
        server.await.unwrap();
    }
}

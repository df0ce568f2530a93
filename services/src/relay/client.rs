//! A minimal blocking HTTP/1.1 client for node-to-node calls (one request per connection,
//! `Connection: close`). The relay and the mailbox run it on the blocking thread pool.
//! `https://` URLs use mutual TLS with the node's own certificate ([`set_tls`]).
//! [`get_streaming`] hands the body over as it arrives (file deliveries: never the whole file
//! in memory).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

/// The node's client TLS configuration (its certificate and the project CA), set once at
/// start when the node is given TLS files.
static TLS: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// Sets the client TLS configuration of this process for `https://` URLs (first call wins).
pub fn set_tls(config: ClientConfig) {
    let _ = TLS.set(Arc::new(config));
}

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("response body: {e}"))
    }
}

/// The `host:port` of a URL (a default port filled in): how a link is named in the metrics.
pub fn authority(url: &str) -> Result<String, String> {
    split_url(url).map(|(authority, _, _)| authority)
}

/// Splits `http[s]://host:port/path` into (`host:port`, `/path`); true for https.
fn split_url(url: &str) -> Result<(String, String, bool), String> {
    let (rest, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => {
            return Err(format!(
                "{url:?}: only http:// and https:// URLs are supported"
            ));
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else if https {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned(), https))
}

/// Reads until the peer closes; a TLS peer that closes without close_notify ends the body too
/// (the response carries its length).
fn read_all(stream: &mut impl Read, raw: &mut Vec<u8>) -> std::io::Result<()> {
    match stream.read_to_end(raw) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Sends one request with a JSON body (or none) and reads the whole response.
pub fn request(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, String> {
    request_with(TLS.get(), method, url, body, headers, timeout)
}

/// [`request`] with an explicit TLS configuration for `https://` URLs.
pub fn request_with(
    tls: Option<&Arc<ClientConfig>>,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, String> {
    let (mut conn, addr) = send(tls, method, url, body, headers, timeout)?;
    let mut raw = Vec::new();
    read_all(&mut conn, &mut raw).map_err(|e| format!("read from {addr}: {e}"))?;
    parse_response(&raw).map_err(|e| format!("response from {addr}: {e}"))
}

/// A plain or TLS connection to a node.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Connects to the host of `url` (TLS for `https://`) and sends the request; returns the
/// connection, ready for the response, and the peer's address for messages.
fn send(
    tls: Option<&Arc<ClientConfig>>,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(Conn, std::net::SocketAddr), String> {
    let (authority, path, https) = split_url(url)?;
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {authority}: no address"))?;
    let stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    let mut conn = if https {
        let tls = tls.ok_or_else(|| format!("{url}: https needs the node's TLS files"))?;
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{url}: server name {host:?}: {e}"))?;
        let session = rustls::ClientConnection::new(tls.clone(), name)
            .map_err(|e| format!("TLS to {addr}: {e}"))?;
        Conn::Tls(Box::new(rustls::StreamOwned::new(session, stream)))
    } else {
        Conn::Plain(stream)
    };
    conn.write_all(&message)
        .and_then(|()| conn.flush())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    Ok((conn, addr))
}

/// A response whose body is read as it arrives: at most `length` bytes (Content-Length).
pub struct Streaming {
    pub status: u16,
    /// The header lines, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Content-Length; None when the response did not send one.
    pub length: Option<u64>,
    /// The body: the bytes read with the header, then the connection, capped at `length`.
    pub body: Box<dyn Read + Send>,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl Streaming {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Largest response header accepted by [`get_streaming`].
const MAX_HEAD: usize = 64 << 10;

/// GETs `url` and returns once the header has arrived; the body is read from the returned
/// [`Streaming`] (a large download never sits in memory whole).
pub fn get_streaming(
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Streaming, String> {
    get_streaming_with(TLS.get(), url, headers, timeout)
}

/// [`get_streaming`] with an explicit TLS configuration for `https://` URLs.
pub fn get_streaming_with(
    tls: Option<&Arc<ClientConfig>>,
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Streaming, String> {
    let (mut conn, addr) = send(tls, "GET", url, None, headers, timeout)?;
    let mut raw = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if raw.len() > MAX_HEAD {
            return Err(format!(
                "response from {addr}: header over {MAX_HEAD} bytes"
            ));
        }
        let n = conn
            .read(&mut chunk)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!("response from {addr}: incomplete header"));
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let (status, headers) =
        parse_head(&raw[..end]).map_err(|e| format!("response from {addr}: {e}"))?;
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    let early = std::io::Cursor::new(raw.split_off(end + 4));
    let body: Box<dyn Read + Send> = match length {
        Some(n) => Box::new(early.chain(conn).take(n)),
        None => Box::new(early.chain(conn)),
    };
    Ok(Streaming {
        status,
        headers,
        length,
        body,
    })
}

/// POSTs a JSON body.
pub fn post_json(
    url: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, String> {
    request("POST", url, Some(body), headers, timeout)
}

/// GETs a URL.
pub fn get(url: &str, timeout: Duration) -> Result<Response, String> {
    request("GET", url, None, &[], timeout)
}

/// The status and the header lines (names in lower case) of a response head.
fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), String> {
    let head = std::str::from_utf8(head).map_err(|_| "header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("incomplete header")?;
    let (status, headers) = parse_head(&raw[..end])?;
    let mut length = None;
    let mut chunked = false;
    for (k, v) in &headers {
        if k == "content-length" {
            length = v.parse::<usize>().ok();
        } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(n) if n <= rest.len() => rest[..n].to_vec(),
            Some(_) => return Err("body shorter than Content-Length".into()),
            None => rest.to_vec(),
        }
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_responses() {
        assert_eq!(
            split_url("http://pref-13:8080/v1/relay").unwrap(),
            ("pref-13:8080".into(), "/v1/relay".into(), false)
        );
        assert_eq!(
            split_url("http://national").unwrap(),
            ("national:80".into(), "/".into(), false)
        );
        assert_eq!(
            split_url("https://national").unwrap(),
            ("national:443".into(), "/".into(), true)
        );
        assert!(split_url("ftp://x/").is_err());
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (503, &b"abcd"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}

//! A small HTTP/1.1 server (keep-alive, Content-Length bodies) written for the
//! mocks rather than taken from a framework, because fault injection needs
//! what frameworks hide: bodies cut short, connections reset mid-request,
//! answers held back for seconds without blocking other connections.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Largest request body we accept (search bodies and admin batches).
const MAX_BODY: usize = 64 << 20;

#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    /// Path without the query string, percent-decoded.
    pub path: String,
    /// Query parameters in order, percent-decoded; repeated keys kept.
    pub query: Vec<(String, String)>,
    /// Length of the request target (path and query) as sent.
    pub target_len: usize,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn params<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json;charset=utf-8".into(),
            )],
            body,
        }
    }

    pub fn with_header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_owned(), v.into()));
        self
    }
}

/// What the connection does with a request.
#[derive(Debug)]
pub enum Reply {
    Send(Response),
    /// Wait, then send (latency faults; other connections go on).
    Delay(Duration, Response),
    /// Send the status line and headers announcing the whole body, then only
    /// half of it, then close: a response cut off in transit.
    Cut {
        response: Response,
    },
    /// Close the connection with a TCP reset and answer nothing.
    Reset,
}

pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Reply;
    /// Called with the bytes actually written for a request's response.
    fn sent(&self, _req: &Request, _status: u16, _bytes: usize) {}
    fn gzip(&self) -> bool {
        false
    }
}

pub async fn serve(listener: TcpListener, handler: Arc<dyn Handler>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let _ = connection(stream, h).await;
        });
    }
}

async fn connection(stream: TcpStream, handler: Arc<dyn Handler>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    loop {
        let Some(req) = read_request(&mut reader).await? else {
            return Ok(());
        };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let gzip_ok = handler.gzip()
            && req
                .header("accept-encoding")
                .is_some_and(|v| v.contains("gzip"));
        let reply = handler.handle(&req);
        let (resp, cut) = match reply {
            Reply::Send(r) => (r, false),
            Reply::Delay(d, r) => {
                tokio::time::sleep(d).await;
                (r, false)
            }
            Reply::Cut { response } => (response, true),
            Reply::Reset => {
                let s = reader.into_inner();
                s.set_zero_linger()?;
                drop(s);
                return Ok(());
            }
        };
        let (head, body) = encode(&resp, gzip_ok && !cut, close || cut);
        let stream = reader.get_mut();
        stream.write_all(&head).await?;
        if cut {
            // Announce the whole body, send half of it, hang up.
            stream.write_all(&body[..body.len() / 2]).await?;
            stream.flush().await?;
            handler.sent(&req, resp.status, body.len() / 2);
            return Ok(());
        }
        stream.write_all(&body).await?;
        handler.sent(&req, resp.status, body.len());
        if close {
            stream.flush().await?;
            return Ok(());
        }
    }
}

fn encode(resp: &Response, gzip: bool, close: bool) -> (Vec<u8>, Vec<u8>) {
    // A body encoded already (a fault's) is sent as it is.
    let encoded = resp
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-encoding"));
    let gzip = gzip && !encoded;
    let body = if gzip && resp.body.len() > 256 {
        let mut enc = GzEncoder::new(Vec::with_capacity(resp.body.len() / 4), Compression::fast());
        enc.write_all(&resp.body).expect("write to a Vec");
        enc.finish().expect("finish into a Vec")
    } else {
        resp.body.clone()
    };
    let gzipped = gzip && resp.body.len() > 256;
    let mut head = Vec::with_capacity(256);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        body.len()
    );
    if gzipped {
        head.extend_from_slice(b"Content-Encoding: gzip\r\n");
    }
    if close {
        head.extend_from_slice(b"Connection: close\r\n");
    }
    let now = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    let _ = write!(head, "Date: {now}\r\n");
    for (k, v) in &resp.headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.extend_from_slice(b"\r\n");
    (head, body)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    // Skip stray blank lines between requests.
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        if headers.len() > 200 {
            return Err(std::io::Error::other("too many headers"));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        return Err(std::io::Error::other(
            "chunked request bodies are not supported",
        ));
    }
    if len > MAX_BODY {
        return Err(std::io::Error::other("request body too large"));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    let (path, qs) = target.split_once('?').unwrap_or((&target, ""));
    let query = parse_form(qs);
    Ok(Some(Request {
        method,
        target_len: target.len(),
        path: decode(path),
        query,
        headers,
        body,
    }))
}

/// `a=1&b=2` (a query string or a form body), decoded, in order.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding, with `+` as space (form encoding, as clients send).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("a%2Cb+c"), "a,b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%E2%9C%93"), "✓");
    }
}

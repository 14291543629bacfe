//! What the mock tests share: a mock started on a port of its own, and a
//! plain HTTP/1.1 client (one connection per request).

// Each test binary uses a part of this.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;

use crm_mock::server::Handler;
use serde_json::Value;

/// Start the mock `make` builds in the background; returns its port.
pub fn start<H: Handler>(make: impl FnOnce() -> H + Send + 'static) -> u16 {
    crm_mock::start_in_background(make)
}

pub struct Resp {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request; `headers` are whole `Name: value\r\n` lines.
pub fn raw(port: u16, method: &str, path: &str, headers: &str, body: &str) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    Resp {
        status: head[9..12].parse().unwrap(),
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// `Authorization: Bearer` plus `extra` header lines.
pub fn bearer(token: &str, extra: &str) -> String {
    format!("Authorization: Bearer {token}\r\n{extra}")
}

/// The elements of a JSON array.
pub fn items(v: &Value) -> &[Value] {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

/// An admin call (`/_mock/…`) that must succeed; its JSON answer.
pub fn admin(port: u16, method: &str, path: &str, body: Value) -> Value {
    let r = raw(port, method, path, "", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

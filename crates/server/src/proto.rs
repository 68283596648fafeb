//! The NATS client protocol on the wire: a pure, incremental parser of what
//! clients send (`CONNECT`, `PUB`, `HPUB`, `SUB`, `UNSUB`, `PING`, `PONG`)
//! and writers of what the server sends (`INFO`, `MSG`, `HMSG`, `PING`,
//! `PONG`, `+OK`, `-ERR`). No I/O: bytes in, operations out, so it is fuzzed
//! on its own (`fuzz/fuzz_targets/server_proto.rs`).

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use durabus_core::{jsapi, ByteString, HeaderMap};
use serde::{Deserialize, Serialize};

/// nats-server's default longest control line (an operation and its
/// arguments, without the payload).
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;
/// nats-server's default largest payload (headers included): 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// The `CONNECT` options a client sends (unknown fields are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ConnectInfo {
    /// Answer every operation with `+OK`.
    pub verbose: bool,
    /// Check subjects strictly.
    pub pedantic: bool,
    /// The client wants a TLS connection.
    pub tls_required: bool,
    /// The client understands `HMSG` (headers).
    pub headers: bool,
    /// The client wants a 503 status when a request has no responders.
    pub no_responders: bool,
    /// Deliver the client's own publishes to its subscriptions (default on).
    pub echo: Option<bool>,
    /// The client's name, for monitoring.
    pub name: Option<String>,
    /// The client library's language.
    pub lang: Option<String>,
    /// The client library's version.
    pub version: Option<String>,
    /// Protocol level (1: the server may send `INFO` updates).
    pub protocol: Option<u8>,
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub pass: Option<String>,
    /// Token.
    pub auth_token: Option<String>,
}

/// One operation a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// `CONNECT {json}`.
    Connect(Box<ConnectInfo>),
    /// `PUB` or `HPUB`.
    Pub(Pub),
    /// `SUB <subject> [queue] <sid>`.
    Sub {
        /// The filter.
        subject: String,
        /// The queue group.
        queue: Option<String>,
        /// The client's id for the subscription.
        sid: Bytes,
    },
    /// `UNSUB <sid> [max]`.
    Unsub {
        /// The client's id for the subscription.
        sid: Bytes,
        /// Remove after this many messages in total (`None`: now).
        max: Option<u64>,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
}

/// A `PUB` or `HPUB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pub {
    /// The subject (a slice of the bytes read).
    pub subject: ByteString,
    /// The reply subject.
    pub reply: Option<ByteString>,
    /// The raw header block (`NATS/1.0\r\n...\r\n\r\n`) of an `HPUB`.
    pub headers: Option<Bytes>,
    /// The payload.
    pub payload: Bytes,
}

/// Why the parser refused the bytes: each is a `-ERR` of nats-server's,
/// after which it closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// An operation name the protocol does not have, or bad arguments.
    #[error("Unknown Protocol Operation")]
    UnknownOperation,
    /// A control line longer than the limit (nats-server writes this one
    /// in lower case).
    #[error("maximum control line exceeded")]
    MaxControlLine,
    /// A payload larger than the limit.
    #[error("Maximum Payload Violation")]
    MaxPayload,
    /// A malformed operation (bad sizes, payload not ended by CRLF, bad
    /// CONNECT JSON): nats-server's parser says the same as for an unknown
    /// operation.
    #[error("Unknown Protocol Operation")]
    Parse,
}

impl ProtoError {
    /// The text of the `-ERR` line nats-server sends for it.
    pub fn err_text(&self) -> String {
        self.to_string()
    }
}

/// The parser's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest control line.
    pub max_control_line: usize,
    /// Largest payload (headers included).
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// A `PUB`/`HPUB` whose control line was read and whose payload is awaited.
#[derive(Debug)]
struct Awaiting {
    subject: ByteString,
    reply: Option<ByteString>,
    /// Header bytes (`HPUB`), included in `total`.
    header_len: Option<usize>,
    total: usize,
}

/// The incremental parser of one connection's input.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    awaiting: Option<Awaiting>,
}

impl Parser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Parser {
            limits,
            awaiting: None,
        }
    }

    /// The next complete operation in `buf`, consuming its bytes; `None`
    /// when more bytes are needed. After an error the connection must be
    /// closed: the parser's position is lost.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<ClientOp>, ProtoError> {
        loop {
            if let Some(a) = &self.awaiting {
                // Payload plus its CRLF.
                if buf.len() < a.total + 2 {
                    return Ok(None);
                }
                if &buf[a.total..a.total + 2] != b"\r\n" {
                    return Err(ProtoError::Parse);
                }
                let Some(a) = self.awaiting.take() else {
                    return Ok(None);
                };
                let mut payload = buf.split_to(a.total).freeze();
                buf.advance(2);
                let headers = a.header_len.map(|n| payload.split_to(n));
                return Ok(Some(ClientOp::Pub(Pub {
                    subject: a.subject,
                    reply: a.reply,
                    headers,
                    payload,
                })));
            }
            let Some(nl) = buf.iter().position(|b| *b == b'\n') else {
                if buf.len() > self.limits.max_control_line {
                    return Err(ProtoError::MaxControlLine);
                }
                return Ok(None);
            };
            if nl > self.limits.max_control_line {
                return Err(ProtoError::MaxControlLine);
            }
            let line = buf.split_to(nl + 1).freeze();
            if line.iter().all(u8::is_ascii_whitespace) {
                // nats-server ignores empty lines.
                continue;
            }
            match self.control(&line)? {
                Some(op) => return Ok(Some(op)),
                // A PUB/HPUB: read its payload.
                None => continue,
            }
        }
    }

    /// Parses one control line; `None` for a `PUB`/`HPUB`, whose payload is
    /// then awaited.
    fn control(&mut self, full: &Bytes) -> Result<Option<ClientOp>, ProtoError> {
        let line = trim_eol(full);
        let (op, rest) = split_op(line);
        // Operation names are short: upper-cased on the stack.
        let mut upper = [0u8; 8];
        let Some(op) = upper.get_mut(..op.len()).map(|dst| {
            dst.copy_from_slice(op);
            dst.make_ascii_uppercase();
            &*dst
        }) else {
            return Err(ProtoError::UnknownOperation);
        };
        match op {
            b"PUB" => {
                let args = args(rest)?;
                let (subject, reply, size) = match args.as_slice() {
                    [s, n] => (s, None, n),
                    [s, r, n] => (s, Some(r), n),
                    _ => return Err(ProtoError::Parse),
                };
                let total = size_arg(size)?;
                self.await_payload(full, subject, reply.copied(), None, total)?;
                Ok(None)
            }
            b"HPUB" => {
                let args = args(rest)?;
                let (subject, reply, hsize, size) = match args.as_slice() {
                    [s, h, n] => (s, None, h, n),
                    [s, r, h, n] => (s, Some(r), h, n),
                    _ => return Err(ProtoError::Parse),
                };
                let header_len = size_arg(hsize)?;
                let total = size_arg(size)?;
                if header_len > total {
                    return Err(ProtoError::Parse);
                }
                self.await_payload(full, subject, reply.copied(), Some(header_len), total)?;
                Ok(None)
            }
            b"SUB" => {
                let args = args(rest)?;
                let (subject, queue, sid) = match args.as_slice() {
                    [s, id] => (s, None, id),
                    [s, q, id] => (s, Some(q), id),
                    _ => return Err(ProtoError::Parse),
                };
                Ok(Some(ClientOp::Sub {
                    subject: text(subject)?,
                    queue: queue.map(|q| text(q)).transpose()?,
                    sid: Bytes::copy_from_slice(sid),
                }))
            }
            b"UNSUB" => {
                let args = args(rest)?;
                let (sid, max) = match args.as_slice() {
                    [id] => (id, None),
                    [id, m] => (id, Some(size_arg(m)? as u64)),
                    _ => return Err(ProtoError::Parse),
                };
                Ok(Some(ClientOp::Unsub {
                    sid: Bytes::copy_from_slice(sid),
                    max,
                }))
            }
            b"CONNECT" => {
                let info: ConnectInfo =
                    serde_json::from_slice(rest).map_err(|_| ProtoError::Parse)?;
                Ok(Some(ClientOp::Connect(Box::new(info))))
            }
            b"PING" => Ok(Some(ClientOp::Ping)),
            b"PONG" => Ok(Some(ClientOp::Pong)),
            _ => Err(ProtoError::UnknownOperation),
        }
    }

    /// Awaits the payload of a publish whose `subject` and `reply` are
    /// slices of `line`.
    fn await_payload(
        &mut self,
        line: &Bytes,
        subject: &[u8],
        reply: Option<&[u8]>,
        header_len: Option<usize>,
        total: usize,
    ) -> Result<(), ProtoError> {
        if total > self.limits.max_payload {
            return Err(ProtoError::MaxPayload);
        }
        self.awaiting = Some(Awaiting {
            subject: shared_text(line, subject)?,
            reply: reply.map(|r| shared_text(line, r)).transpose()?,
            header_len,
            total,
        });
        Ok(())
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The operation name and the rest of the line (leading blanks removed).
fn split_op(line: &[u8]) -> (&[u8], &[u8]) {
    let line = trim_start(line);
    let end = line
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(line.len());
    let (op, rest) = line.split_at(end);
    (op, trim_start(rest))
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(s.len());
    &s[start..]
}

/// A control line's arguments, on the stack.
struct Args<'a> {
    items: [&'a [u8]; 5],
    len: usize,
}

impl<'a> Args<'a> {
    fn as_slice(&self) -> &[&'a [u8]] {
        &self.items[..self.len]
    }
}

/// Blank-separated arguments (at most five: more is a parse error).
fn args(rest: &[u8]) -> Result<Args<'_>, ProtoError> {
    let mut out = Args {
        items: [&[]; 5],
        len: 0,
    };
    for a in rest
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|a| !a.is_empty())
    {
        *out.items.get_mut(out.len).ok_or(ProtoError::Parse)? = a;
        out.len += 1;
    }
    Ok(out)
}

fn size_arg(s: &[u8]) -> Result<usize, ProtoError> {
    if s.is_empty() || s.len() > 12 {
        return Err(ProtoError::Parse);
    }
    s.iter().try_fold(0usize, |n, d| {
        let d = d
            .checked_sub(b'0')
            .filter(|d| *d <= 9)
            .ok_or(ProtoError::Parse)?;
        Ok(n * 10 + usize::from(d))
    })
}

fn text(s: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(s.to_vec()).map_err(|_| ProtoError::Parse)
}

/// `s`, a slice of `line`, as text sharing `line`'s bytes.
fn shared_text(line: &Bytes, s: &[u8]) -> Result<ByteString, ProtoError> {
    ByteString::try_from(line.slice_ref(s)).map_err(|_| ProtoError::Parse)
}

/// What the server says about itself in `INFO`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// Unique id of this server instance.
    pub server_id: String,
    /// Its name.
    pub server_name: String,
    /// The version it claims (the NATS protocol features it has).
    pub version: String,
    /// Implementation language, as nats-server says "go".
    pub go: String,
    /// Host it listens on.
    pub host: String,
    /// Port it listens on.
    pub port: u16,
    /// It understands headers.
    pub headers: bool,
    /// Largest payload it accepts.
    pub max_payload: usize,
    /// Protocol level.
    pub proto: u8,
    /// This connection's id.
    pub client_id: u64,
    /// The client's address as the server sees it.
    pub client_ip: String,
    /// JetStream is available.
    pub jetstream: bool,
    /// Credentials are required.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
    /// TLS is required.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_required: bool,
}

/// Appends `INFO {json}\r\n`.
pub fn write_info(out: &mut BytesMut, info: &ServerInfo) {
    out.put_slice(b"INFO ");
    // Serializing a struct of strings and numbers cannot fail.
    if let Ok(json) = serde_json::to_vec(info) {
        out.put_slice(&json);
    }
    out.put_slice(b"\r\n");
}

/// `PING\r\n`.
pub const PING: &[u8] = b"PING\r\n";
/// `PONG\r\n`.
pub const PONG: &[u8] = b"PONG\r\n";
/// `+OK\r\n`.
pub const OK: &[u8] = b"+OK\r\n";

/// Appends `-ERR '<text>'\r\n`.
pub fn write_err(out: &mut BytesMut, text: &str) {
    out.put_slice(b"-ERR '");
    out.put_slice(text.as_bytes());
    out.put_slice(b"'\r\n");
}

/// Appends a `MSG` (no headers) or `HMSG` (with a header block) for
/// subscription `sid`.
pub fn write_msg(
    out: &mut BytesMut,
    subject: &str,
    sid: &[u8],
    reply: Option<&str>,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    let mut n = itoa::Buffer::new();
    out.reserve(subject.len() + sid.len() + payload.len() + 64);
    out.put_slice(if headers.is_some() { b"HMSG " } else { b"MSG " });
    out.put_slice(subject.as_bytes());
    out.put_u8(b' ');
    out.put_slice(sid);
    out.put_u8(b' ');
    if let Some(r) = reply {
        out.put_slice(r.as_bytes());
        out.put_u8(b' ');
    }
    if let Some(h) = headers {
        out.put_slice(n.format(h.len()).as_bytes());
        out.put_u8(b' ');
        out.put_slice(n.format(h.len() + payload.len()).as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(h);
    } else {
        out.put_slice(n.format(payload.len()).as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// A header block: `NATS/1.0[ <status> <description>]\r\n` then each
/// header, then an empty line.
pub fn header_block(headers: &HeaderMap, status: Option<(u16, &str)>) -> Bytes {
    Bytes::from(jsapi::header_block(headers, status))
}

/// The header a status line (`NATS/1.0 100 Idle Heartbeat`) travels in
/// when the hub routes it through the backend to another connection: core
/// messages carry headers, not status lines. The hub removes it from what
/// clients publish, so no client can forge a status.
pub const ROUTED_STATUS: &str = "Durabus-Hub-Status";

/// The header block of a message the backend routed: its status line, if
/// it travelled as [`ROUTED_STATUS`], restored.
pub fn routed_header_block(headers: &HeaderMap) -> Bytes {
    let Some(status) = headers.get(ROUTED_STATUS) else {
        return header_block(headers, None);
    };
    let (code, description) = status.split_once(' ').unwrap_or((status, ""));
    let mut rest = headers.clone();
    rest.remove(ROUTED_STATUS);
    header_block(&rest, code.parse().ok().map(|code| (code, description)))
}

/// A header block to route through the backend: its headers, with its
/// status line, if any, as [`ROUTED_STATUS`].
pub fn routed_headers(block: &[u8]) -> HeaderMap {
    let parsed = jsapi::HeaderBlock::parse(block);
    let mut headers = parsed.headers;
    if let Some(code) = parsed.status {
        headers.append(ROUTED_STATUS, format!("{code} {}", parsed.description));
    }
    headers
}

/// The headers of a header block sent by a client (an empty block, as
/// nats.js sends `HPUB ... 0 <n>`, has none). `None` when it does not start
/// with `NATS/1.0`.
pub fn parse_header_block(raw: &[u8]) -> Option<HeaderMap> {
    if raw.is_empty() {
        return Some(HeaderMap::new());
    }
    if !raw.starts_with(jsapi::NATS_HEADER_LINE.as_bytes()) {
        return None;
    }
    Some(jsapi::HeaderBlock::parse(raw).headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Result<Vec<ClientOp>, ProtoError> {
        let mut p = Parser::new(Limits::default());
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(op) = p.parse(&mut buf)? {
            out.push(op);
        }
        Ok(out)
    }

    #[test]
    fn every_client_operation_parses() {
        let ops = all(
            b"CONNECT {\"verbose\":true,\"headers\":true}\r\nPING\r\npong\r\n\
SUB a.* q 1\r\nSUB b 2\r\nUNSUB 1\r\nUNSUB 2 5\r\nPUB a.b 5\r\nhello\r\n\
PUB a.b r.1 0\r\n\r\nHPUB a.b 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
        )
        .unwrap();
        assert_eq!(ops.len(), 10);
        let ClientOp::Connect(c) = &ops[0] else {
            panic!("{:?}", ops[0])
        };
        assert!(c.verbose && c.headers && c.echo.is_none());
        assert_eq!(ops[1], ClientOp::Ping);
        assert_eq!(ops[2], ClientOp::Pong);
        assert_eq!(
            ops[3],
            ClientOp::Sub {
                subject: "a.*".into(),
                queue: Some("q".into()),
                sid: Bytes::from_static(b"1")
            }
        );
        assert_eq!(
            ops[6],
            ClientOp::Unsub {
                sid: Bytes::from_static(b"2"),
                max: Some(5)
            }
        );
        let ClientOp::Pub(p) = &ops[7] else { panic!() };
        assert_eq!((&*p.subject, &p.payload[..]), ("a.b", &b"hello"[..]));
        let ClientOp::Pub(p) = &ops[8] else { panic!() };
        assert_eq!(p.reply.as_deref(), Some("r.1"));
        assert!(p.payload.is_empty());
        let ClientOp::Pub(p) = &ops[9] else { panic!() };
        assert_eq!(p.headers.as_deref(), Some(&b"NATS/1.0\r\n\r\n"[..]));
        assert_eq!(&p.payload[..], b"hi");
    }

    #[test]
    fn operations_split_across_reads_parse_once_complete() {
        let input = b"PUB a 5\r\nhello\r\nPING\r\n";
        for cut in 0..input.len() {
            let mut p = Parser::new(Limits::default());
            let mut buf = BytesMut::from(&input[..cut]);
            let mut ops = Vec::new();
            while let Some(op) = p.parse(&mut buf).unwrap() {
                ops.push(op);
            }
            buf.extend_from_slice(&input[cut..]);
            while let Some(op) = p.parse(&mut buf).unwrap() {
                ops.push(op);
            }
            assert_eq!(ops.len(), 2, "cut at {cut}");
        }
    }

    #[test]
    fn limits_and_garbage_get_nats_server_errors() {
        assert_eq!(all(b"FOO bar\r\n"), Err(ProtoError::UnknownOperation));
        let long = vec![b'x'; DEFAULT_MAX_CONTROL_LINE + 1];
        assert_eq!(all(&long), Err(ProtoError::MaxControlLine));
        let big = format!("PUB a {}\r\n", DEFAULT_MAX_PAYLOAD + 1);
        assert_eq!(all(big.as_bytes()), Err(ProtoError::MaxPayload));
        assert_eq!(all(b"PUB a 2\r\nabc\r\n"), Err(ProtoError::Parse));
        assert_eq!(all(b"PUB a -1\r\n"), Err(ProtoError::Parse));
        assert_eq!(all(b"HPUB a 5 2\r\n"), Err(ProtoError::Parse));
        assert_eq!(all(b"CONNECT {nope\r\n"), Err(ProtoError::Parse));
        assert_eq!(all(b"SUB\r\n"), Err(ProtoError::Parse));
    }

    #[test]
    fn messages_are_written_as_nats_server_writes_them() {
        let mut out = BytesMut::new();
        write_msg(&mut out, "a.b", b"7", None, None, b"hi");
        write_msg(
            &mut out,
            "a.b",
            b"7",
            Some("r"),
            Some(b"NATS/1.0\r\n\r\n"),
            b"hi",
        );
        assert_eq!(
            &out[..],
            b"MSG a.b 7 2\r\nhi\r\nHMSG a.b 7 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
        );
        let h = header_block(&HeaderMap::new().with("A", "1"), Some((503, "")));
        assert_eq!(&h[..], b"NATS/1.0 503\r\nA: 1\r\n\r\n");
        assert_eq!(parse_header_block(&h).unwrap().get("A"), Some("1"));
    }

    #[test]
    fn a_status_routed_through_the_backend_is_written_as_a_status_line_again() {
        let sent = header_block(
            &HeaderMap::new().with("Nats-Last-Consumer", "3"),
            Some((100, "Idle Heartbeat")),
        );
        let routed = routed_headers(&sent);
        assert!(routed.get(ROUTED_STATUS).is_some());
        assert_eq!(routed_header_block(&routed), sent);
        let plain = HeaderMap::new().with("A", "1");
        assert_eq!(routed_header_block(&plain), header_block(&plain, None));
    }
}

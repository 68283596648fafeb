//! Messages and headers between async-nats and durabus.

use durabus_core::{HeaderMap, Message};

pub(super) fn to_nats_headers(h: &HeaderMap) -> async_nats::HeaderMap {
    let mut out = async_nats::HeaderMap::new();
    for (n, v) in h.iter() {
        out.append(n, v);
    }
    out
}

pub(super) fn from_nats_headers(h: Option<&async_nats::HeaderMap>) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(h) = h {
        for (n, values) in h.iter() {
            for v in values {
                out.append(n.to_string(), v.as_str());
            }
        }
    }
    out
}

pub(super) fn from_nats_message(m: async_nats::Message) -> Message {
    Message {
        subject: m.subject.to_string(),
        reply: m.reply.map(|r| r.to_string()),
        headers: from_nats_headers(m.headers.as_ref()),
        payload: m.payload,
    }
}

//! Output shared by the verbs: times, sizes, payloads and messages, for
//! humans and as JSON.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use durabus::{HeaderMap, Message, StoredMessage};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// A time as RFC 3339 in UTC with milliseconds, for people.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A time as RFC 3339 in UTC with nanoseconds, for JSON.
pub(crate) fn rfc3339_nanos(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// An optional time for people: RFC 3339 or `-`.
pub(crate) fn rfc3339_or_dash(t: Option<SystemTime>) -> String {
    t.map_or_else(|| "-".to_owned(), rfc3339)
}

/// The time `ns` nanoseconds after (or before) the Unix epoch.
pub(crate) fn time_from_unix_nanos(ns: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub(crate) fn bytes_human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)] // display only
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `n` and the noun, plural unless `n` is 1: `1 message`, `3 messages`.
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// An empty comfy-table in the one style of every table (`bench`; the
/// listings draw the same style with [`Listing`]).
pub(crate) fn table() -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table
}

/// A listing (`stream ls`, `consumer ls`, `dlq ls`, `kv ls`): one-line
/// rows under a header, in the style of [`table`], the columns in `right`
/// aligned right (the numbers).
///
/// Drawn here rather than by comfy-table, in the same characters: its
/// per-cell formatting cost `stream ls` 40 ms at 10,000 streams (this takes
/// about 3). The tests hold the two to the same output.
pub(crate) struct Listing<const N: usize> {
    header: [&'static str; N],
    right: std::ops::Range<usize>,
    rows: Vec<[String; N]>,
}

impl<const N: usize> Listing<N> {
    pub(crate) fn new(header: [&'static str; N], right: std::ops::Range<usize>) -> Self {
        Self {
            header,
            right,
            rows: Vec::new(),
        }
    }

    /// Adds a row; a line break in a cell is shown as a blank.
    pub(crate) fn add_row(&mut self, mut row: [String; N]) {
        for cell in &mut row {
            if cell.contains(['\n', '\r']) {
                *cell = cell.replace(['\n', '\r'], " ");
            }
        }
        self.rows.push(row);
    }

    /// The table, its lines joined by newlines (no newline after the last).
    pub(crate) fn text(&self) -> String {
        use unicode_width::UnicodeWidthStr as _;
        let mut widths = self.header.map(str::width);
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.width());
            }
        }
        let border = |out: &mut String, [left, fill, cross, right]: [char; 4]| {
            out.push(left);
            for (i, w) in widths.iter().enumerate() {
                if i > 0 {
                    out.push(cross);
                }
                out.extend(std::iter::repeat_n(fill, w + 2));
            }
            out.push(right);
            out.push('\n');
        };
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
            out.push('│');
            for (i, (cell, w)) in cells.zip(&widths).enumerate() {
                if i > 0 {
                    out.push('┆');
                }
                let pad = w - cell.width();
                let (before, after) = if self.right.contains(&i) {
                    (pad, 0)
                } else {
                    (0, pad)
                };
                out.push(' ');
                out.extend(std::iter::repeat_n(' ', before));
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', after));
                out.push(' ');
            }
            out.push_str("│\n");
        };
        let row_len: usize = widths.iter().map(|w| w + 3).sum::<usize>() + 4;
        let mut out = String::with_capacity(row_len * (self.rows.len() + 4));
        border(&mut out, ['┌', '─', '┬', '┐']);
        line(&mut out, &mut self.header.iter().copied());
        border(&mut out, ['╞', '═', '╪', '╡']);
        for row in &self.rows {
            line(&mut out, &mut row.iter().map(String::as_str));
        }
        border(&mut out, ['└', '─', '┴', '┘']);
        out.pop();
        out
    }
}

/// A duration for people: `2m`, `1h 30m`, `250ms`.
pub(crate) fn duration_human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A duration in nanoseconds, as JetStream's JSON API writes them.
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A count or size limit as JetStream's JSON API writes it: the value, or
/// `-1` for unlimited.
pub(crate) fn limit_json<T: Into<u64>>(limit: Option<T>) -> JsonLimit {
    JsonLimit(limit.map(Into::into))
}

/// A count or size limit, serialized as JetStream writes it (see
/// [`limit_json`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonLimit(Option<u64>);

impl Serialize for JsonLimit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(n) => serializer.serialize_u64(n),
            None => serializer.serialize_i64(-1),
        }
    }
}

/// An age limit as JetStream's JSON API writes it: nanoseconds, `0` for
/// unlimited.
pub(crate) fn age_json(limit: Option<Duration>) -> u64 {
    limit.map_or(0, duration_nanos)
}

/// Adds the payload to a JSON object: `payload` as a string when it is
/// UTF-8, otherwise `payload_base64`. Exactly one of the two is present.
pub(crate) fn insert_payload(object: &mut Map<String, Value>, payload: &[u8]) {
    match std::str::from_utf8(payload) {
        Ok(text) => {
            object.insert("payload".into(), Value::String(text.to_owned()));
        }
        Err(_) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
            object.insert("payload_base64".into(), Value::String(encoded));
        }
    }
}

/// Headers as a JSON list of `[name, value]` pairs (order and repeats kept).
pub(crate) fn headers_json(headers: &HeaderMap) -> Value {
    Value::Array(headers.iter().map(|(n, v)| json!([n, v])).collect())
}

/// A live message as a JSON object.
pub(crate) fn message_json(message: &Message) -> Value {
    let mut object = Map::new();
    object.insert("subject".into(), json!(message.subject));
    if let Some(reply) = &message.reply {
        object.insert("reply".into(), json!(reply));
    }
    object.insert("headers".into(), headers_json(&message.headers));
    object.insert("size".into(), json!(message.payload.len()));
    insert_payload(&mut object, &message.payload);
    Value::Object(object)
}

/// A stored message as a JSON object.
pub(crate) fn stored_json(message: &StoredMessage) -> Value {
    let mut object = Map::new();
    object.insert("stream".into(), json!(message.stream));
    object.insert("seq".into(), json!(message.seq));
    object.insert("subject".into(), json!(message.subject));
    object.insert("time".into(), json!(rfc3339_nanos(message.time)));
    object.insert("headers".into(), headers_json(&message.headers));
    object.insert("size".into(), json!(message.payload.len()));
    insert_payload(&mut object, &message.payload);
    Value::Object(object)
}

/// Writes one JSON value as a line on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> io::Result<()> {
    // Buffered: stdout's own buffer writes a line at a time, and a JSON
    // document is one line (10,000 streams: 6 MB in 6,000 writes).
    let mut out = io::BufWriter::with_capacity(64 << 10, io::stdout().lock());
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes lines of text on stdout.
pub(crate) fn print_text(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Writes a payload's bytes as they are on stdout, then a newline if asked
/// (`--raw`: for scripts and binary payloads).
pub(crate) fn print_raw(payload: &[u8], newline: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(payload)?;
    if newline {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// The payload for people: the text itself when it is UTF-8 (one trailing
/// newline dropped), otherwise a note with the base64 form.
fn payload_text(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) => text.strip_suffix('\n').unwrap_or(text).to_owned(),
        Err(_) => format!(
            "<{} bytes of binary data, base64: {}>",
            payload.len(),
            base64::engine::general_purpose::STANDARD.encode(payload)
        ),
    }
}

/// A message for people: a title line, indented headers, then the payload.
fn message_block(title: &str, headers: &HeaderMap, payload: &[u8]) -> String {
    let mut text = String::with_capacity(title.len() + payload.len() + 32);
    text.push_str(title);
    text.push('\n');
    for (name, value) in headers.iter() {
        text.push_str("  ");
        text.push_str(name);
        text.push_str(": ");
        text.push_str(value);
        text.push('\n');
    }
    text.push_str(&payload_text(payload));
    text.push('\n');
    text
}

/// A live message for people, numbered `n` in this session.
pub(crate) fn message_human(n: u64, message: &Message) -> String {
    let reply = message
        .reply
        .as_deref()
        .map(|r| format!(" reply to {r}"))
        .unwrap_or_default();
    let title = format!(
        "[#{n}] {} ({}){reply}",
        message.subject,
        bytes_human(message.payload.len() as u64)
    );
    message_block(&title, &message.headers, &message.payload)
}

/// A stored message for people: sequence, subject, time, size.
pub(crate) fn stored_human(message: &StoredMessage) -> String {
    let title = format!(
        "[{} #{}] {} {} ({})",
        message.stream,
        message.seq,
        rfc3339(message.time),
        message.subject,
        bytes_human(message.payload.len() as u64)
    );
    message_block(&title, &message.headers, &message.payload)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_use_binary_units_with_one_decimal() {
        assert_eq!(bytes_human(0), "0 B");
        assert_eq!(bytes_human(1023), "1023 B");
        assert_eq!(bytes_human(1536), "1.5 KiB");
        assert_eq!(bytes_human(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn binary_payloads_are_base64_and_text_payloads_are_strings() {
        let mut object = Map::new();
        insert_payload(&mut object, b"hello");
        assert_eq!(object.get("payload"), Some(&json!("hello")));
        let mut object = Map::new();
        insert_payload(&mut object, &[0xff, 0x00]);
        assert_eq!(object.get("payload_base64"), Some(&json!("/wA=")));
        assert!(object.get("payload").is_none());
    }

    /// The same rows drawn by comfy-table, as listings were drawn before.
    fn comfy<const N: usize>(
        header: [&str; N],
        right: std::ops::Range<usize>,
        rows: &[[&str; N]],
    ) -> String {
        let mut table = table();
        table.set_header(header);
        for column in right {
            if let Some(c) = table.column_mut(column) {
                c.set_cell_alignment(comfy_table::CellAlignment::Right);
            }
        }
        for row in rows {
            table.add_row(*row);
        }
        table.lines().collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn listings_are_drawn_as_comfy_table_draws_them() {
        let header = ["stream", "subjects", "messages", "last message"];
        let cases: [&[[&str; 4]]; 4] = [
            &[],
            &[["S0", "s0.>", "3", "-"]],
            &[
                [
                    "orders",
                    "orders.>, refunds.*",
                    "1234567",
                    "2026-12-07T14:08:09.504Z",
                ],
                ["", "", "", ""],
                ["日本語", "é.ß.>", "0", "-"],
                ["a-much-longer-stream-name-than-the-header", "x", "99", "-"],
            ],
            &[["naïve", "🦀.>", "7", "wide 🦀 in the last column"]],
        ];
        for rows in cases {
            for right in [0..0, 2..3, 0..4] {
                let mut listing = Listing::new(header, right.clone());
                for row in rows {
                    listing.add_row(row.map(str::to_owned));
                }
                assert_eq!(
                    listing.text(),
                    comfy(header, right.clone(), rows),
                    "rows {rows:?}, right {right:?}"
                );
            }
        }
    }

    #[test]
    fn a_line_break_in_a_cell_does_not_break_the_listing() {
        let mut listing = Listing::new(["error"], 0..0);
        listing.add_row(["first\nsecond\r".to_owned()]);
        let text = listing.text();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("│ first second  │"), "{text}");
    }

    #[test]
    fn negative_unix_nanos_are_before_the_epoch() {
        assert!(time_from_unix_nanos(-1) < UNIX_EPOCH);
        assert_eq!(
            rfc3339(time_from_unix_nanos(1_000_000_000)),
            "1970-01-01T00:00:01.000Z"
        );
    }
}

//! Check function of the `server_proto` fuzz target in `fuzz/` (reliability
//! item R8), also run on its committed corpus under `cargo test`. Hidden
//! from the docs and not a stable API.

use bytes::BytesMut;

use crate::proto::{ClientOp, Limits, Parser, ProtoError};

/// Outcome of a check: `Err` describes the property that does not hold.
pub type Check = Result<(), String>;

/// Small limits, so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_control_line: 256,
    max_payload: 1024,
};

/// What a parser makes of `pieces` read one after the other: the
/// operations, then the error that ended it (if any), and the most bytes
/// it held unparsed.
fn run(pieces: &[&[u8]]) -> (Vec<ClientOp>, Option<ProtoError>, usize) {
    let mut parser = Parser::new(LIMITS);
    let mut buf = BytesMut::new();
    let mut ops = Vec::new();
    let mut held = 0;
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => break,
                Err(e) => return (ops, Some(e), held),
            }
        }
        held = held.max(buf.len());
    }
    (ops, None, held)
}

/// The client protocol parser ([`Parser`]) on arbitrary bytes.
///
/// Properties: it returns; what it makes of the bytes does not depend on
/// how they are cut into reads (whole, cut in two where the first byte
/// says, one byte at a time for short inputs); what it holds waiting for
/// more never exceeds a control line plus a payload and its CRLF.
pub fn check_protocol(data: &[u8]) -> Check {
    let whole = run(&[data]);
    let cut = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let two = run(&[&data[..cut], &data[cut..]]);
    if (&whole.0, &whole.1) != (&two.0, &two.1) {
        return Err(format!(
            "cut at {cut}: {:?} / {:?} vs whole {:?} / {:?}",
            two.0, two.1, whole.0, whole.1
        ));
    }
    if data.len() <= 512 {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        let single = run(&bytes);
        if (&whole.0, &whole.1) != (&single.0, &single.1) {
            return Err(format!(
                "byte by byte: {:?} / {:?} vs whole {:?} / {:?}",
                single.0, single.1, whole.0, whole.1
            ));
        }
        let bound = LIMITS.max_control_line + LIMITS.max_payload + 2;
        if single.2 > bound {
            return Err(format!("held {} bytes unparsed (bound {bound})", single.2));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_proto_corpus_holds_its_properties() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/server_proto");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            check_protocol(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n > 0, "no corpus files in {}", dir.display());
    }
}

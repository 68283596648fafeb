//! Check function of the `url` fuzz target in `fuzz/` (reliability item R8),
//! also run on its committed corpus under `cargo test`. Hidden from the docs
//! and not a stable API; the engine's own checks are in
//! `durabus_log::fuzzing`.

use crate::url::{parse_url, redact, BackendUrl};

/// Outcome of a check: `Err` describes the property that does not hold.
pub type Check = Result<(), String>;

/// Backend URLs ([`parse_url`], [`redact`]; for `nats://` and `tls://` the
/// NATS option parser behind them). The input is a URL (invalid UTF-8 is
/// replaced).
///
/// Properties: parsing returns; it is deterministic; a parsed NATS URL does
/// not show in its `Debug` form (it may hold credentials); a `file:` URL
/// has a non-empty path; redacting returns.
///
/// URLs naming `nkey_seed_file` are skipped: that option reads the named
/// file, which a fuzzer must not do to arbitrary paths.
pub fn check_url(data: &[u8]) -> Check {
    let url = String::from_utf8_lossy(data);
    if url.contains("nkey_seed_file") {
        return Ok(());
    }
    let _ = redact(&url);
    let first = parse_url(&url);
    let again = parse_url(&url);
    if format!("{first:?}") != format!("{again:?}") {
        return Err(format!("parse_url({url:?}) is not deterministic"));
    }
    match first {
        Ok(BackendUrl::File { path, .. }) if path.as_os_str().is_empty() => {
            Err(format!("{url:?} parsed to an empty path"))
        }
        #[cfg(feature = "nats")]
        Ok(parsed @ BackendUrl::Nats { .. }) => {
            if url.len() >= 8 && format!("{parsed:?}").contains(url.as_ref()) {
                Err(format!("the Debug form of {url:?} shows the URL"))
            } else {
                Ok(())
            }
        }
        Ok(_) | Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_corpus_holds_its_properties() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/url");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            check_url(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n > 0, "no corpus files in {}", dir.display());
    }
}

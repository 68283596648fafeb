//! JetStream API errors as durabus errors.

use durabus_core::Error;

use crate::api::{codes, ApiError};

pub(super) fn not_found(stream: &str) -> Error {
    Error::StreamNotFound {
        name: stream.to_owned(),
    }
}

pub(super) fn generic(e: ApiError) -> Error {
    if e.err_code == codes::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT {
        return Error::JetStreamNotEnabled;
    }
    if e.code == 503 {
        return Error::Unavailable {
            reason: format!("{} (err_code {})", e.description, e.err_code),
        };
    }
    Error::Server(format!(
        "{} (code {}, err_code {})",
        e.description, e.code, e.err_code
    ))
}

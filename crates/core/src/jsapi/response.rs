//! The envelope of every JetStream API answer: its `type`, an optional
//! `error`, then the body's fields; the `type` strings; reading an answer
//! as its body or its error.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ApiError;

/// The `type` of each JetStream API answer, as nats-server sends it.
pub mod types {
    /// `$JS.API.INFO`.
    pub const ACCOUNT_INFO: &str = "io.nats.jetstream.api.v1.account_info_response";
    /// `$JS.API.STREAM.CREATE.<stream>`.
    pub const STREAM_CREATE: &str = "io.nats.jetstream.api.v1.stream_create_response";
    /// `$JS.API.STREAM.UPDATE.<stream>`.
    pub const STREAM_UPDATE: &str = "io.nats.jetstream.api.v1.stream_update_response";
    /// `$JS.API.STREAM.INFO.<stream>`.
    pub const STREAM_INFO: &str = "io.nats.jetstream.api.v1.stream_info_response";
    /// `$JS.API.STREAM.DELETE.<stream>`.
    pub const STREAM_DELETE: &str = "io.nats.jetstream.api.v1.stream_delete_response";
    /// `$JS.API.STREAM.PURGE.<stream>`.
    pub const STREAM_PURGE: &str = "io.nats.jetstream.api.v1.stream_purge_response";
    /// `$JS.API.STREAM.NAMES`.
    pub const STREAM_NAMES: &str = "io.nats.jetstream.api.v1.stream_names_response";
    /// `$JS.API.STREAM.LIST`.
    pub const STREAM_LIST: &str = "io.nats.jetstream.api.v1.stream_list_response";
    /// `$JS.API.STREAM.MSG.GET.<stream>`.
    pub const STREAM_MSG_GET: &str = "io.nats.jetstream.api.v1.stream_msg_get_response";
    /// `$JS.API.STREAM.MSG.DELETE.<stream>`.
    pub const STREAM_MSG_DELETE: &str = "io.nats.jetstream.api.v1.stream_msg_delete_response";
    /// `$JS.API.STREAM.SNAPSHOT.<stream>`.
    pub const STREAM_SNAPSHOT: &str = "io.nats.jetstream.api.v1.stream_snapshot_response";
    /// `$JS.API.STREAM.RESTORE.<stream>`.
    pub const STREAM_RESTORE: &str = "io.nats.jetstream.api.v1.stream_restore_response";
    /// `$JS.API.STREAM.PEER.REMOVE.<stream>`.
    pub const STREAM_REMOVE_PEER: &str = "io.nats.jetstream.api.v1.stream_remove_peer_response";
    /// `$JS.API.STREAM.LEADER.STEPDOWN.<stream>`.
    pub const STREAM_LEADER_STEPDOWN: &str =
        "io.nats.jetstream.api.v1.stream_leader_stepdown_response";
    /// `$JS.API.CONSUMER.CREATE.<stream>[.<consumer>]` and
    /// `$JS.API.CONSUMER.DURABLE.CREATE.<stream>.<consumer>`.
    pub const CONSUMER_CREATE: &str = "io.nats.jetstream.api.v1.consumer_create_response";
    /// `$JS.API.CONSUMER.INFO.<stream>.<consumer>`.
    pub const CONSUMER_INFO: &str = "io.nats.jetstream.api.v1.consumer_info_response";
    /// `$JS.API.CONSUMER.DELETE.<stream>.<consumer>`.
    pub const CONSUMER_DELETE: &str = "io.nats.jetstream.api.v1.consumer_delete_response";
    /// `$JS.API.CONSUMER.NAMES.<stream>`.
    pub const CONSUMER_NAMES: &str = "io.nats.jetstream.api.v1.consumer_names_response";
    /// `$JS.API.CONSUMER.LIST.<stream>`.
    pub const CONSUMER_LIST: &str = "io.nats.jetstream.api.v1.consumer_list_response";
    /// `$JS.API.CONSUMER.LEADER.STEPDOWN.<stream>.<consumer>`.
    pub const CONSUMER_LEADER_STEPDOWN: &str =
        "io.nats.jetstream.api.v1.consumer_leader_stepdown_response";
    /// The answer of a server too busy to take a request.
    pub const SYSTEM_OVERLOADED: &str = "io.nats.jetstream.api.v1.system_overloaded";
}

/// A body of a JetStream API answer, and what nats-server sends of it
/// beside an error: nothing where its Go struct embeds the body by pointer
/// (infos), the zero values where it embeds them by value (paging, counts).
pub trait ApiBody: Sized {
    /// The body that goes with an error: `None` unless the answer keeps
    /// fields then (`"purged":0`, `"total":0,"offset":0,"limit":0`).
    fn error_body() -> Option<Self> {
        None
    }
}

/// A JetStream API answer: `{"type":..., "error":{...}, ...body}` (the
/// error only when the request failed).
///
/// A server builds it with [`ApiResponse::ok`] or [`ApiResponse::error`]
/// and serializes it; a client reads the body or the error with
/// [`parse_response`] (deriving `Deserialize` here, an unreadable body
/// reads as `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiResponse<T> {
    /// The answer's type, one of [`types`].
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Why the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// The body's fields, beside `type` and `error`.
    #[serde(flatten)]
    pub body: Option<T>,
}

impl<T> ApiResponse<T> {
    /// A successful answer of `kind` (one of [`types`]).
    pub fn ok(kind: &str, body: T) -> Self {
        Self {
            kind: kind.to_owned(),
            error: None,
            body: Some(body),
        }
    }

    /// The body, or the error.
    pub fn into_result(self) -> Result<Option<T>, ApiError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.body),
        }
    }
}

impl<T: ApiBody> ApiResponse<T> {
    /// A failed answer of `kind`, with what nats-server sends beside the
    /// error ([`ApiBody::error_body`]).
    pub fn error(kind: &str, error: ApiError) -> Self {
        Self {
            kind: kind.to_owned(),
            error: Some(error),
            body: T::error_body(),
        }
    }
}

/// Reads a JetStream API answer as its body `T`, or its error: the outer
/// `Err` is an answer that is not JSON or whose body `T` cannot read. The
/// body's type ignores the envelope's fields (`type`, paging it does not
/// have), so `T` can be the info itself (a [`super::StreamInfoJson`] for a
/// stream info answer).
pub fn parse_response<T: DeserializeOwned>(
    answer: &[u8],
) -> Result<Result<T, ApiError>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        error: Option<ApiError>,
    }
    let head: Head = serde_json::from_slice(answer)?;
    if let Some(e) = head.error {
        return Ok(Err(e));
    }
    serde_json::from_slice(answer).map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_error::codes;
    use crate::jsapi::{
        ConsumerInfoJson, ConsumerListResponseJson, ConsumerNamesResponseJson, MsgGetResponseJson,
        PurgeResponseJson, StreamCreateResponseJson, StreamInfoJson, StreamInfoResponseJson,
        StreamListResponseJson, StreamNamesResponseJson, SuccessJson,
    };

    /// Serializes `r` and checks it is `want` (key order included).
    fn same<T: Serialize>(r: &ApiResponse<T>, want: &str) {
        assert_eq!(serde_json::to_string(r).unwrap(), want);
    }

    fn e(entry: crate::api_error::ApiErrorCode, d: &str) -> ApiError {
        ApiError::new(entry, d)
    }

    /// Error answers of nats-server 2.9.10, field for field.
    #[test]
    fn error_answers_are_nats_servers() {
        let not_found = || e(codes::STREAM_NOT_FOUND, "stream not found");
        let invalid = || ApiError {
            code: 400,
            err_code: 10025,
            description: "invalid JSON".into(),
        };
        same(
            &ApiResponse::<StreamInfoResponseJson>::error(types::STREAM_INFO, not_found()),
            r#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0,"offset":0,"limit":0}"#,
        );
        same(
            &ApiResponse::<StreamCreateResponseJson>::error(
                types::STREAM_CREATE,
                e(
                    codes::SUBJECTS_OVERLAP,
                    "subjects overlap with an existing stream",
                ),
            ),
            r#"{"type":"io.nats.jetstream.api.v1.stream_create_response","error":{"code":400,"err_code":10065,"description":"subjects overlap with an existing stream"}}"#,
        );
        same(
            &ApiResponse::<PurgeResponseJson>::error(types::STREAM_PURGE, not_found()),
            r#"{"type":"io.nats.jetstream.api.v1.stream_purge_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"purged":0}"#,
        );
        same(
            &ApiResponse::<StreamNamesResponseJson>::error(types::STREAM_NAMES, invalid()),
            r#"{"type":"io.nats.jetstream.api.v1.stream_names_response","error":{"code":400,"err_code":10025,"description":"invalid JSON"},"total":0,"offset":0,"limit":0,"streams":null}"#,
        );
        same(
            &ApiResponse::<StreamListResponseJson>::error(types::STREAM_LIST, invalid()),
            r#"{"type":"io.nats.jetstream.api.v1.stream_list_response","error":{"code":400,"err_code":10025,"description":"invalid JSON"},"total":0,"offset":0,"limit":0,"streams":[]}"#,
        );
        same(
            &ApiResponse::<ConsumerNamesResponseJson>::error(types::CONSUMER_NAMES, not_found()),
            r#"{"type":"io.nats.jetstream.api.v1.consumer_names_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0,"offset":0,"limit":0,"consumers":[]}"#,
        );
        same(
            &ApiResponse::<ConsumerListResponseJson>::error(types::CONSUMER_LIST, not_found()),
            r#"{"type":"io.nats.jetstream.api.v1.consumer_list_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0,"offset":0,"limit":0,"consumers":[]}"#,
        );
        same(
            &ApiResponse::<MsgGetResponseJson>::error(
                types::STREAM_MSG_GET,
                e(codes::NO_MESSAGE_FOUND, "no message found"),
            ),
            r#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":404,"err_code":10037,"description":"no message found"}}"#,
        );
        same(
            &ApiResponse::<SuccessJson>::error(
                types::STREAM_MSG_DELETE,
                e(codes::MSG_DELETE_FAILED, "no message found"),
            ),
            r#"{"type":"io.nats.jetstream.api.v1.stream_msg_delete_response","error":{"code":500,"err_code":10057,"description":"no message found"}}"#,
        );
        same(
            &ApiResponse::<ConsumerInfoJson>::error(
                types::CONSUMER_INFO,
                e(codes::CONSUMER_NOT_FOUND, "consumer not found"),
            ),
            r#"{"type":"io.nats.jetstream.api.v1.consumer_info_response","error":{"code":404,"err_code":10014,"description":"consumer not found"}}"#,
        );
    }

    #[test]
    fn success_answers_are_nats_servers() {
        same(
            &ApiResponse::ok(types::CONSUMER_DELETE, SuccessJson { success: true }),
            r#"{"type":"io.nats.jetstream.api.v1.consumer_delete_response","success":true}"#,
        );
        same(
            &ApiResponse::ok(
                types::STREAM_PURGE,
                PurgeResponseJson {
                    success: true,
                    purged: 2,
                },
            ),
            r#"{"type":"io.nats.jetstream.api.v1.stream_purge_response","success":true,"purged":2}"#,
        );
    }

    #[test]
    fn clients_read_the_body_or_the_error() {
        let answer = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0,"offset":0,"limit":0}"#;
        let e = parse_response::<StreamInfoJson>(answer)
            .unwrap()
            .unwrap_err();
        assert!(e.is(codes::STREAM_NOT_FOUND));
        let r: ApiResponse<StreamInfoResponseJson> = serde_json::from_slice(answer).unwrap();
        assert_eq!(r.kind, types::STREAM_INFO);
        assert!(r.into_result().is_err());
        let ok = br#"{"type":"io.nats.jetstream.api.v1.stream_delete_response","success":true}"#;
        assert!(parse_response::<SuccessJson>(ok).unwrap().unwrap().success);
        let r: ApiResponse<SuccessJson> = serde_json::from_slice(ok).unwrap();
        assert_eq!(
            r.into_result().unwrap(),
            Some(SuccessJson { success: true })
        );
        assert!(parse_response::<SuccessJson>(b"{bad").is_err());
        assert!(parse_response::<SuccessJson>(br#"{"success":"yes"}"#).is_err());
    }
}

//! Reading and deleting stored messages: get by sequence, last by
//! subject, delete (`$JS.API.STREAM.MSG.*`).

use durabus_core::{subject, ApiRequest, Error, Result, StoredMessage};
use serde_json::{json, Value};

use super::NatsBackend;
use crate::api;

impl NatsBackend {
    /// The newest message on `subj`, found by walking the subject forward.
    ///
    /// nats-server 2.9 forgets a subject's earlier messages for
    /// last-by-subject lookups once the subject's newest message is deleted
    /// (its per-subject index keeps the deleted sequence as the last). When
    /// the server still counts messages on the subject, this finds the
    /// newest one with next-by-subject reads, one per stored message.
    pub(super) async fn last_by_scan(
        &self,
        stream: &str,
        subj: &str,
        what: String,
    ) -> Result<StoredMessage> {
        let missing = || Error::MessageNotFound {
            stream: stream.to_owned(),
            what: what.clone(),
        };
        let info = match self
            .api(
                &format!("STREAM.INFO.{stream}"),
                json!({ "subjects_filter": subj }),
            )
            .await?
        {
            Ok(v) => v,
            Err(e) => return Err(e.to_error(&ApiRequest::stream(stream).what(&what))),
        };
        let count = info
            .pointer("/state/subjects")
            .and_then(|m| m.get(subj))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if count == 0 {
            return Err(missing());
        }
        let mut seq = info
            .pointer("/state/first_seq")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let mut last = None;
        loop {
            let body = json!({ "seq": seq, "next_by_subj": subj });
            match self.msg_get(stream, body, what.clone()).await {
                Ok(m) => {
                    seq = m.seq + 1;
                    last = Some(m);
                }
                Err(Error::MessageNotFound { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        last.ok_or_else(missing)
    }
    /// One `STREAM.MSG.GET`, `what` naming what was asked for.
    async fn msg_get(&self, stream: &str, body: Value, what: String) -> Result<StoredMessage> {
        durabus_core::validate_stream_name(stream)?;
        match self.api(&format!("STREAM.MSG.GET.{stream}"), body).await? {
            Ok(v) => api::stored_message(stream, v).map_err(Error::internal),
            Err(e) => Err(e.to_error(&ApiRequest::stream(stream).what(&what))),
        }
    }
    /// [`durabus_core::Backend::get_message`].
    pub(super) async fn nats_get_message(&self, stream: &str, seq: u64) -> Result<StoredMessage> {
        self.check()?;
        self.msg_get(stream, json!({ "seq": seq }), format!("at sequence {seq}"))
            .await
    }

    /// [`durabus_core::Backend::get_last_message`].
    pub(super) async fn nats_get_last_message(
        &self,
        stream: &str,
        subj: &str,
    ) -> Result<StoredMessage> {
        self.check()?;
        subject::validate_publish(subj)?;
        let what = format!("for subject {subj:?}");
        match self
            .msg_get(stream, json!({ "last_by_subj": subj }), what.clone())
            .await
        {
            Err(Error::MessageNotFound { .. }) => self.last_by_scan(stream, subj, what).await,
            other => other,
        }
    }

    /// [`durabus_core::Backend::delete_message`].
    pub(super) async fn nats_delete_message(&self, stream: &str, seq: u64) -> Result<()> {
        self.check()?;
        durabus_core::validate_stream_name(stream)?;
        match self
            .api(
                &format!("STREAM.MSG.DELETE.{stream}"),
                json!({ "seq": seq, "no_erase": true }),
            )
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let what = format!("at sequence {seq}");
                Err(e.to_error(&ApiRequest::stream(stream).what(&what)))
            }
        }
    }
}

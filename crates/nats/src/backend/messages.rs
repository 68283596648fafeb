//! Reading and deleting stored messages: get by sequence, last by
//! subject, delete (`$JS.API.STREAM.MSG.*`).

use durabus_core::jsapi::{
    MsgDeleteRequestJson, MsgGetRequestJson, MsgGetResponseJson, StreamInfoJson,
    StreamInfoRequestJson, SuccessJson,
};
use durabus_core::{subject, ApiRequest, ByteString, Error, Result, StoredMessage};

use super::NatsBackend;

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
        let request = StreamInfoRequestJson {
            subjects_filter: subj.to_owned(),
            ..StreamInfoRequestJson::default()
        };
        let info = match self
            .api::<StreamInfoJson>(&format!("STREAM.INFO.{stream}"), &request)
            .await?
        {
            Ok(info) => info,
            Err(e) => return Err(e.to_error(&ApiRequest::stream(stream).what(&what))),
        };
        let count = info.state.subjects.get(subj).copied().unwrap_or(0);
        if count == 0 {
            return Err(missing());
        }
        let mut seq = info.state.first_seq;
        let mut last = None;
        loop {
            let body = MsgGetRequestJson::next_by_subject(seq, subj);
            match self.msg_get(stream, &body, what.clone()).await {
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
    async fn msg_get(
        &self,
        stream: &str,
        body: &MsgGetRequestJson,
        what: String,
    ) -> Result<StoredMessage> {
        durabus_core::validate_stream_name(stream)?;
        match self
            .api::<MsgGetResponseJson>(&format!("STREAM.MSG.GET.{stream}"), body)
            .await?
        {
            Ok(MsgGetResponseJson {
                message: Some(message),
            }) => Ok(message.into_stored(ByteString::from(stream))),
            Ok(_) => Err(Error::internal(
                "message get answer without a message".to_owned(),
            )),
            Err(e) => Err(e.to_error(&ApiRequest::stream(stream).what(&what))),
        }
    }
    /// [`durabus_core::Backend::get_message`].
    pub(super) async fn nats_get_message(&self, stream: &str, seq: u64) -> Result<StoredMessage> {
        self.check()?;
        self.msg_get(
            stream,
            &MsgGetRequestJson::seq(seq),
            format!("at sequence {seq}"),
        )
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
            .msg_get(
                stream,
                &MsgGetRequestJson::last_by_subject(subj),
                what.clone(),
            )
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
        let body = MsgDeleteRequestJson {
            seq,
            no_erase: true,
        };
        match self
            .api::<SuccessJson>(&format!("STREAM.MSG.DELETE.{stream}"), &body)
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

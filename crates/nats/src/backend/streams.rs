//! Stream administration: create, update, info, list, delete and purge
//! through the JetStream stream API (`$JS.API.STREAM.*`).

use durabus_core::api_error::{codes, Overlap};
use durabus_core::jsapi::{
    MsgGetRequestJson, MsgGetResponseJson, PurgeRequestJson, PurgeResponseJson, StreamConfigJson,
    StreamInfoJson, StreamListRequestJson, StreamListResponseJson, SuccessJson,
};
use durabus_core::ArgumentError;
use durabus_core::{
    subject, ApiError, ApiRequest, Error, PurgeRequest, Result, StreamConfig, StreamInfo,
};
use serde_json::json;

use super::NatsBackend;

impl NatsBackend {
    /// The stream `name` as the server has it.
    pub(super) async fn fetch_info(&self, name: &str) -> Result<StreamInfo> {
        match self
            .api::<StreamInfoJson>(&format!("STREAM.INFO.{name}"), &json!({}))
            .await?
        {
            Ok(info) => Ok(info.into()),
            Err(e) => Err(e.to_error(&ApiRequest::stream(name))),
        }
    }

    /// Every stream, sorted by name.
    async fn all_streams(&self) -> Result<Vec<StreamInfo>> {
        let mut out = Vec::new();
        loop {
            let request = StreamListRequestJson {
                offset: out.len() as u64,
                ..StreamListRequestJson::default()
            };
            let page = match self
                .api::<StreamListResponseJson>("STREAM.LIST", &request)
                .await?
            {
                Ok(page) => page,
                Err(e) => return Err(e.generic()),
            };
            if page.streams.is_empty() {
                break;
            }
            out.extend(page.streams.into_iter().map(StreamInfo::from));
            if out.len() as u64 >= page.paged.total {
                break;
            }
        }
        out.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        Ok(out)
    }

    /// Names the stream whose subjects collide with `cfg`'s.
    async fn overlap_error(&self, cfg: &StreamConfig, e: ApiError) -> Error {
        let request = ApiRequest::stream(&cfg.name);
        let Ok(streams) = self.all_streams().await else {
            return e.to_error(&request);
        };
        for s in &cfg.effective_subjects() {
            for other in streams.iter().filter(|o| o.config.name != cfg.name) {
                for o in other.config.effective_subjects() {
                    if subject::overlaps(s, &o) {
                        return e.to_error(&request.overlap(Overlap {
                            subject: s,
                            other: &other.config.name,
                            other_subject: &o,
                        }));
                    }
                }
            }
        }
        e.to_error(&request)
    }

    /// A configuration as the server keeps it, for comparing.
    fn normalized(cfg: &StreamConfig) -> StreamConfig {
        let mut c = cfg.clone();
        c.subjects = c.effective_subjects();
        c
    }
    /// [`durabus_core::Backend::create_stream`].
    pub(super) async fn nats_create_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        self.check()?;
        config.validate()?;
        match self.fetch_info(&config.name).await {
            Ok(info) => {
                return if Self::normalized(&info.config) == Self::normalized(&config) {
                    self.routes().remember(&info);
                    Ok(info)
                } else {
                    Err(Error::StreamNameInUse { name: config.name })
                };
            }
            Err(Error::StreamNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let body = StreamConfigJson::from(&config);
        match self
            .api::<StreamInfoJson>(&format!("STREAM.CREATE.{}", config.name), &body)
            .await?
        {
            Ok(info) => {
                let info = StreamInfo::from(info);
                self.routes().remember(&info);
                Ok(info)
            }
            Err(e) if e.is(codes::SUBJECTS_OVERLAP) => Err(self.overlap_error(&config, e).await),
            Err(e) => Err(e.to_error(&ApiRequest::stream(&config.name))),
        }
    }

    /// [`durabus_core::Backend::update_stream`].
    pub(super) async fn nats_update_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        self.check()?;
        config.validate()?;
        let body = StreamConfigJson::from(&config);
        match self
            .api::<StreamInfoJson>(&format!("STREAM.UPDATE.{}", config.name), &body)
            .await?
        {
            Ok(info) => {
                let info = StreamInfo::from(info);
                self.routes().remember(&info);
                Ok(info)
            }
            Err(e) if e.is(codes::SUBJECTS_OVERLAP) => Err(self.overlap_error(&config, e).await),
            // A refusal is a configuration the server does not accept.
            Err(e) => Err(e.to_error(&ApiRequest::stream(&config.name).config())),
        }
    }

    /// [`durabus_core::Backend::stream_info`].
    pub(super) async fn nats_stream_info(&self, name: &str) -> Result<StreamInfo> {
        self.check()?;
        durabus_core::validate_stream_name(name)?;
        self.fetch_info(name).await
    }

    /// [`durabus_core::Backend::list_streams`].
    pub(super) async fn nats_list_streams(&self) -> Result<Vec<StreamInfo>> {
        self.check()?;
        self.all_streams().await
    }

    /// [`durabus_core::Backend::delete_stream`].
    pub(super) async fn nats_delete_stream(&self, name: &str) -> Result<()> {
        self.check()?;
        durabus_core::validate_stream_name(name)?;
        let r = self
            .api::<SuccessJson>(&format!("STREAM.DELETE.{name}"), &json!({}))
            .await?;
        self.routes().forget(name);
        match r {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_error(&ApiRequest::stream(name))),
        }
    }

    /// [`durabus_core::Backend::purge_stream`].
    pub(super) async fn nats_purge_stream(&self, name: &str, request: PurgeRequest) -> Result<u64> {
        self.check()?;
        durabus_core::validate_stream_name(name)?;
        if request.keep.is_some() && request.up_to_seq.is_some() {
            return Err(Error::invalid_argument(ArgumentError::PurgeKeepAndSequence));
        }
        if let Some(f) = &request.subject {
            subject::validate_filter(f)?;
        }
        let mut filter = request.subject.clone();
        if matches!(request.up_to_seq, Some(0 | 1)) || request.keep.is_some() {
            let info = self.fetch_info(name).await?;
            if info.config.deny_purge {
                return Err(Error::Denied {
                    stream: name.to_owned(),
                    operation: "purge",
                });
            }
            // nats-server 2.9 reads "up to 1" as "no bound": nothing lies
            // below sequence 1, so nothing is removed.
            if matches!(request.up_to_seq, Some(0 | 1)) {
                return Ok(0);
            }
            // nats-server 2.9 implements a stream-wide keep as "compact to
            // last_seq - keep + 1", which keeps fewer than asked when
            // messages were deleted in between; the filtered path counts.
            if filter.is_none() && info.state.num_deleted > 0 {
                let subjects = info.config.effective_subjects();
                match subjects.as_slice() {
                    [one] if one != ">" => filter = Some(one.clone()),
                    _ => {}
                }
            }
        }
        let mut up_to = request.up_to_seq;
        if let (None, Some(n)) = (&filter, up_to) {
            // nats-server 2.9 compacts to exactly `n` and reports it as
            // first_seq even when `n` itself was deleted: compact to the
            // first message present at or after `n` instead (or purge all).
            match self
                .api::<MsgGetResponseJson>(
                    &format!("STREAM.MSG.GET.{name}"),
                    &MsgGetRequestJson::next_by_subject(n, ">"),
                )
                .await?
            {
                Ok(got) => {
                    up_to = got.message.map(|m| m.seq).or(up_to);
                }
                Err(e) if e.is(codes::NO_MESSAGE_FOUND) => up_to = None,
                Err(e) if e.is(codes::STREAM_NOT_FOUND) => {
                    return Err(e.to_error(&ApiRequest::stream(name)))
                }
                Err(_) => {}
            }
        }
        let body = PurgeRequestJson::from(&PurgeRequest {
            subject: filter,
            keep: request.keep,
            up_to_seq: up_to,
        });
        match self
            .api::<PurgeResponseJson>(&format!("STREAM.PURGE.{name}"), &body)
            .await?
        {
            Ok(r) => Ok(r.purged),
            Err(e) => Err(e.to_error(&ApiRequest::stream(name))),
        }
    }
}

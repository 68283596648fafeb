//! The `$JS.API.*` requests: account info, streams, messages and
//! consumers, each run against the backend and answered as nats-server 2.9
//! answers (a JSON body with its `type`, or an `error` with nats-server's
//! `code` and `err_code`). `DIRECT.GET` answers with the message itself.

use std::sync::Arc;

use bytes::Bytes;
use durabus_core::api_error::codes;
use durabus_core::jsapi::{
    self, types, AccountInfoJson, AccountLimitsJson, ApiBody, ApiPaged, ApiResponse,
    ConsumerAction, ConsumerInfoJson, ConsumerListRequestJson, ConsumerListResponseJson,
    ConsumerNamesResponseJson, CreateConsumerRequestJson, MsgDeleteRequestJson, MsgGetRequestJson,
    MsgGetResponseJson, PurgeRequestJson, PurgeResponseJson, StoredMessageJson, StreamConfigJson,
    StreamCreateResponseJson, StreamInfoJson, StreamListRequestJson, StreamListResponseJson,
    StreamNamesResponseJson, SuccessJson,
};
use durabus_core::{
    subject, ApiError, Backend, ConsumerConfig, Error, HeaderMap, StoredMessage, StreamInfo,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::push;
use crate::ctx::ConnCtx;
use crate::proto;

/// Names per page of STREAM.NAMES / CONSUMER.NAMES, as nats-server.
const NAMES_PAGE: usize = 1024;
/// Infos per page of STREAM.LIST / CONSUMER.LIST, as nats-server.
const LIST_PAGE: usize = 256;
/// The `type` of the answer to an API subject nats-server does not have.
const UNKNOWN: &str = "io.nats.jetstream.api.v1.error_response";

/// Runs API request `what` (the subject after `$JS.API.`) and answers to
/// `reply`; a request without a reply subject has nowhere to be answered
/// and is ignored, as nats-server does.
pub(crate) async fn handle(ctx: &Arc<ConnCtx>, what: &str, reply: Option<&str>, body: &[u8]) {
    let Some(reply) = reply else { return };
    let tokens: Vec<&str> = what.split('.').collect();
    if let ["DIRECT", "GET", stream, rest @ ..] = tokens.as_slice() {
        direct_get(ctx, stream, rest, reply, body).await;
        return;
    }
    let answer = route(ctx, &tokens, body).await;
    ctx.answer(reply, answer).await;
}

/// An answer of `kind`: the body, or the error.
fn respond<T: Serialize + ApiBody>(kind: &str, r: Result<T, ApiError>) -> Vec<u8> {
    let response = match r {
        Ok(body) => ApiResponse::ok(kind, body),
        Err(e) => ApiResponse::error(kind, e),
    };
    serde_json::to_vec(&response).unwrap_or_default()
}

fn fixed(entry: durabus_core::api_error::ApiErrorCode) -> ApiError {
    ApiError::new(entry, entry.description)
}

/// The body as `T`; an empty body is `T`'s default.
fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.trim_ascii().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|_| fixed(codes::INVALID_JSON))
}

/// The body as `T`; it must be there.
fn parse_required<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| fixed(codes::INVALID_JSON))
}

fn err(e: &Error) -> ApiError {
    ApiError::from_error(e)
}

async fn route(ctx: &Arc<ConnCtx>, tokens: &[&str], body: &[u8]) -> Vec<u8> {
    let b: &dyn Backend = &*ctx.shared.backend;
    match tokens {
        ["INFO"] => respond(types::ACCOUNT_INFO, account_info(b).await),
        ["STREAM", "CREATE", s] => respond(types::STREAM_CREATE, stream_create(b, s, body).await),
        ["STREAM", "UPDATE", s] => respond(types::STREAM_UPDATE, stream_update(b, s, body).await),
        ["STREAM", "INFO", s] => respond(types::STREAM_INFO, stream_info(b, s).await),
        ["STREAM", "DELETE", s] => respond(types::STREAM_DELETE, stream_delete(ctx, s).await),
        ["STREAM", "PURGE", s] => respond(types::STREAM_PURGE, stream_purge(b, s, body).await),
        ["STREAM", "NAMES"] => respond(types::STREAM_NAMES, stream_names(b, body).await),
        ["STREAM", "LIST"] => respond(types::STREAM_LIST, stream_list(b, body).await),
        ["STREAM", "MSG", "GET", s] => respond(types::STREAM_MSG_GET, msg_get(b, s, body).await),
        ["STREAM", "MSG", "DELETE", s] => {
            respond(types::STREAM_MSG_DELETE, msg_delete(b, s, body).await)
        }
        ["CONSUMER", "CREATE", s] => respond(
            types::CONSUMER_CREATE,
            consumer_create(ctx, s, None, None, body).await,
        ),
        ["CONSUMER", "CREATE", s, name, filter @ ..] => {
            let filter = (!filter.is_empty()).then(|| filter.join("."));
            respond(
                types::CONSUMER_CREATE,
                consumer_create(ctx, s, Some(name), filter, body).await,
            )
        }
        ["CONSUMER", "DURABLE", "CREATE", s, name] => respond(
            types::CONSUMER_CREATE,
            consumer_create(ctx, s, Some(name), None, body).await,
        ),
        ["CONSUMER", "INFO", s, c] => respond(types::CONSUMER_INFO, consumer_info(ctx, s, c).await),
        ["CONSUMER", "DELETE", s, c] => {
            respond(types::CONSUMER_DELETE, consumer_delete(ctx, s, c).await)
        }
        ["CONSUMER", "NAMES", s] => {
            respond(types::CONSUMER_NAMES, consumer_names(b, s, body).await)
        }
        ["CONSUMER", "LIST", s] => respond(types::CONSUMER_LIST, consumer_list(ctx, s, body).await),
        // A single server: what needs a cluster is refused as nats-server
        // refuses it outside one.
        ["STREAM", "PEER", "REMOVE", ..] => respond::<SuccessJson>(
            types::STREAM_REMOVE_PEER,
            Err(fixed(codes::CLUSTER_REQUIRED)),
        ),
        ["STREAM", "LEADER", "STEPDOWN", ..] => respond::<SuccessJson>(
            types::STREAM_LEADER_STEPDOWN,
            Err(fixed(codes::CLUSTER_REQUIRED)),
        ),
        ["CONSUMER", "LEADER", "STEPDOWN", ..] => respond::<SuccessJson>(
            types::CONSUMER_LEADER_STEPDOWN,
            Err(fixed(codes::CLUSTER_REQUIRED)),
        ),
        _ => respond::<SuccessJson>(
            UNKNOWN,
            Err(ApiError::new(
                codes::BAD_REQUEST,
                format!(
                    "$JS.API.{} is not supported by the durabus hub (its README lists what is)",
                    tokens.join(".")
                ),
            )),
        ),
    }
}

async fn account_info(b: &dyn Backend) -> Result<AccountInfoJson, ApiError> {
    let streams = b.list_streams().await.map_err(|e| err(&e))?;
    let mut info = AccountInfoJson {
        limits: AccountLimitsJson::unlimited(),
        // As 2.10: async-nats reads account info only with these.
        reserved_memory: Some(0),
        reserved_storage: Some(0),
        streams: streams.len() as u64,
        ..AccountInfoJson::default()
    };
    for s in &streams {
        match s.config.storage {
            durabus_core::StorageType::Memory => info.memory += s.state.bytes,
            durabus_core::StorageType::File => info.storage += s.state.bytes,
        }
        info.consumers += s.state.consumer_count;
    }
    Ok(info)
}

/// A stream configuration from a create or update body for stream `name`.
fn stream_config(name: &str, body: &[u8]) -> Result<durabus_core::StreamConfig, ApiError> {
    let req: StreamConfigJson = parse_required(body)?;
    if req.name != name {
        return Err(fixed(codes::STREAM_MISMATCH));
    }
    if let Some(feature) = req.unsupported() {
        return Err(ApiError::new(
            codes::INVALID_STREAM_CONFIG,
            format!("{feature} is not supported by the durabus hub"),
        ));
    }
    Ok(req.into())
}

async fn stream_create(
    b: &dyn Backend,
    name: &str,
    body: &[u8],
) -> Result<StreamCreateResponseJson, ApiError> {
    let config = stream_config(name, body)?;
    let info = b.create_stream(config).await.map_err(|e| err(&e))?;
    // nats-server 2.9 says it created one also when an equal one existed.
    Ok(StreamCreateResponseJson {
        info: StreamInfoJson::from(&info),
        did_create: true,
    })
}

async fn stream_update(
    b: &dyn Backend,
    name: &str,
    body: &[u8],
) -> Result<StreamInfoJson, ApiError> {
    let config = stream_config(name, body)?;
    let info = b.update_stream(config).await.map_err(|e| match e {
        Error::InvalidConfig { reason } => ApiError::new(codes::STREAM_UPDATE, reason.to_string()),
        e => err(&e),
    })?;
    Ok(StreamInfoJson::from(&info))
}

async fn stream_info(b: &dyn Backend, name: &str) -> Result<StreamInfoJson, ApiError> {
    let info = b.stream_info(name).await.map_err(|e| err(&e))?;
    Ok(StreamInfoJson::from(&info))
}

async fn stream_delete(ctx: &ConnCtx, name: &str) -> Result<SuccessJson, ApiError> {
    ctx.shared
        .backend
        .delete_stream(name)
        .await
        .map_err(|e| err(&e))?;
    ctx.shared.push.stop_stream(name);
    Ok(SuccessJson { success: true })
}

async fn stream_purge(
    b: &dyn Backend,
    name: &str,
    body: &[u8],
) -> Result<PurgeResponseJson, ApiError> {
    let req: PurgeRequestJson = parse(body)?;
    let purged = b
        .purge_stream(name, req.into())
        .await
        .map_err(|e| err(&e))?;
    Ok(PurgeResponseJson {
        success: true,
        purged,
    })
}

/// A page of `items` from `offset`.
fn page<T: Clone>(items: &[T], offset: u64, limit: usize) -> Vec<T> {
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    items.iter().skip(offset).take(limit).cloned().collect()
}

fn paged(total: usize, offset: u64, limit: usize) -> ApiPaged {
    ApiPaged {
        total: total as u64,
        offset,
        limit: limit as u64,
    }
}

/// The streams whose subjects overlap `filter` (all when it is empty).
async fn streams_for(b: &dyn Backend, filter: &str) -> Result<Vec<StreamInfo>, ApiError> {
    let streams = b.list_streams().await.map_err(|e| err(&e))?;
    Ok(streams
        .into_iter()
        .filter(|s| {
            filter.is_empty()
                || s.config
                    .effective_subjects()
                    .iter()
                    .any(|own| subject::overlaps(own, filter))
        })
        .collect())
}

async fn stream_names(b: &dyn Backend, body: &[u8]) -> Result<StreamNamesResponseJson, ApiError> {
    let req: StreamListRequestJson = parse(body)?;
    let names: Vec<String> = streams_for(b, &req.subject)
        .await?
        .into_iter()
        .map(|s| s.config.name)
        .collect();
    Ok(StreamNamesResponseJson {
        paged: paged(names.len(), req.offset, NAMES_PAGE),
        streams: page(&names, req.offset, NAMES_PAGE),
    })
}

async fn stream_list(b: &dyn Backend, body: &[u8]) -> Result<StreamListResponseJson, ApiError> {
    let req: StreamListRequestJson = parse(body)?;
    let infos: Vec<StreamInfoJson> = streams_for(b, &req.subject)
        .await?
        .iter()
        .map(StreamInfoJson::from)
        .collect();
    Ok(StreamListResponseJson {
        paged: paged(infos.len(), req.offset, LIST_PAGE),
        streams: page(&infos, req.offset, LIST_PAGE),
        missing: Vec::new(),
    })
}

/// The message a get request names: by sequence, the last on a subject,
/// or the first at or after a sequence on a subject.
async fn get(
    b: &dyn Backend,
    stream: &str,
    req: &MsgGetRequestJson,
) -> Result<StoredMessage, ApiError> {
    let r = match (
        req.seq,
        req.last_by_subj.as_str(),
        req.next_by_subj.as_str(),
    ) {
        (0, last, "") if !last.is_empty() => b.get_last_message(stream, last).await,
        (seq, "", "") if seq > 0 => b.get_message(stream, seq).await,
        (seq, "", next) if !next.is_empty() => {
            return next_by_subject(b, stream, seq.max(1), next).await
        }
        _ => return Err(fixed(codes::BAD_REQUEST)),
    };
    r.map_err(|e| match e {
        Error::MessageNotFound { .. } => fixed(codes::NO_MESSAGE_FOUND),
        e => err(&e),
    })
}

/// The first message at or after `seq` whose subject matches `filter`.
async fn next_by_subject(
    b: &dyn Backend,
    stream: &str,
    seq: u64,
    filter: &str,
) -> Result<StoredMessage, ApiError> {
    let options = durabus_core::ReplayOptions::from_seq(seq)
        .filter(filter)
        .stop_at_end();
    let mut replay = b.replay(stream, options).await.map_err(|e| err(&e))?;
    while let Some(m) = replay.next().await {
        match m {
            Ok(m) => return Ok(m),
            Err(e) if e.is_lost_messages() => continue,
            Err(e) => return Err(err(&e)),
        }
    }
    Err(fixed(codes::NO_MESSAGE_FOUND))
}

async fn msg_get(
    b: &dyn Backend,
    stream: &str,
    body: &[u8],
) -> Result<MsgGetResponseJson, ApiError> {
    let req: MsgGetRequestJson = parse_required(body)?;
    let m = get(b, stream, &req).await?;
    Ok(MsgGetResponseJson {
        message: Some(StoredMessageJson::from(&m)),
    })
}

async fn msg_delete(b: &dyn Backend, stream: &str, body: &[u8]) -> Result<SuccessJson, ApiError> {
    let req: MsgDeleteRequestJson = parse_required(body)?;
    b.delete_message(stream, req.seq)
        .await
        .map_err(|e| err(&e))?;
    Ok(SuccessJson { success: true })
}

/// `DIRECT.GET.<stream>` (a get request body) or
/// `DIRECT.GET.<stream>.<subject>` (the last message on it): the message
/// itself with `Nats-Stream`, `Nats-Sequence`, `Nats-Time-Stamp` and
/// `Nats-Subject` headers, or a 404 status.
async fn direct_get(ctx: &ConnCtx, stream: &str, subject: &[&str], reply: &str, body: &[u8]) {
    let b: &dyn Backend = &*ctx.shared.backend;
    let req = if subject.is_empty() {
        match parse::<MsgGetRequestJson>(body) {
            Ok(r) => r,
            Err(_) => {
                ctx.status(reply, 408, "Bad Request", HeaderMap::new())
                    .await;
                return;
            }
        }
    } else {
        MsgGetRequestJson::last_by_subject(subject.join("."))
    };
    match get(b, stream, &req).await {
        Ok(m) => {
            let mut headers = m.headers.clone();
            headers.insert("Nats-Stream", stream);
            headers.insert("Nats-Sequence", m.seq.to_string());
            headers.insert("Nats-Time-Stamp", jsapi::format_time(m.time));
            headers.insert("Nats-Subject", m.subject.to_string());
            let block = proto::header_block(&headers, None);
            ctx.deliver(reply, None, None, Some(block), Bytes::clone(&m.payload))
                .await;
        }
        Err(e) if e.is(codes::NO_MESSAGE_FOUND) || e.is(codes::STREAM_NOT_FOUND) => {
            ctx.status(reply, 404, "Message Not Found", HeaderMap::new())
                .await;
        }
        Err(e) => {
            ctx.status(reply, 408, &e.description, HeaderMap::new())
                .await;
        }
    }
}

async fn consumer_create(
    ctx: &Arc<ConnCtx>,
    stream: &str,
    name: Option<&str>,
    filter: Option<String>,
    body: &[u8],
) -> Result<ConsumerInfoJson, ApiError> {
    let req: CreateConsumerRequestJson = parse_required(body)?;
    if req.stream_name != stream {
        return Err(fixed(codes::STREAM_MISMATCH));
    }
    let mut cfg = req.config;
    if let Some(name) = name {
        let given = [cfg.durable_name.as_str(), cfg.name.as_str()];
        if given.iter().any(|g| !g.is_empty() && *g != name) {
            return Err(fixed(codes::CONSUMER_NAME_MISMATCH));
        }
        if cfg.durable_name.is_empty() && cfg.name.is_empty() {
            cfg.durable_name = name.to_owned();
        }
    }
    if let Some(filter) = filter {
        if !cfg.filter_subject.is_empty() && cfg.filter_subject != filter {
            return Err(ApiError::new(
                codes::BAD_REQUEST,
                "consumer filter subject does not match the subject of the request",
            ));
        }
        cfg.filter_subject = filter;
    }
    if cfg.flow_control && !cfg.is_push() {
        return Err(fixed(codes::FLOW_CONTROL_NEEDS_PUSH));
    }
    if cfg.flow_control && cfg.idle_heartbeat == 0 {
        return Err(fixed(codes::FLOW_CONTROL_NEEDS_HEARTBEATS));
    }
    if cfg.is_push() {
        return push::create(ctx, stream, cfg).await;
    }
    let b = &ctx.shared.backend;
    let config: ConsumerConfig = cfg.into();
    // 2.9 knows no action: a create of an existing durable with another
    // configuration updates it; 2.10's `create` refuses, `update` needs one.
    let info = match req.action {
        ConsumerAction::Update => b.update_consumer(stream, config).await,
        ConsumerAction::Create => b.create_consumer(stream, config).await,
        ConsumerAction::CreateOrUpdate => match b.create_consumer(stream, config.clone()).await {
            Err(Error::ConsumerNameInUse { .. }) => b.update_consumer(stream, config).await,
            r => r,
        },
    }
    .map_err(|e| consumer_error(&e))?;
    Ok(ConsumerInfoJson::from(&info))
}

/// A refused consumer create as nats-server 2.9 answers it.
pub(crate) fn consumer_error(e: &Error) -> ApiError {
    match e {
        Error::InvalidConfig { reason } => {
            ApiError::new(codes::CONSUMER_CREATE, reason.to_string())
        }
        e => err(e),
    }
}

/// A consumer's info, with the push settings the hub keeps for it.
fn info_json(ctx: &ConnCtx, info: &durabus_core::ConsumerInfo) -> ConsumerInfoJson {
    let mut json = ConsumerInfoJson::from(info);
    if let Some(push) = ctx.shared.push.config(&info.stream, &info.name) {
        json.config = push;
        json.push_bound = true;
    }
    json
}

async fn consumer_info(
    ctx: &ConnCtx,
    stream: &str,
    name: &str,
) -> Result<ConsumerInfoJson, ApiError> {
    let info = ctx
        .shared
        .backend
        .consumer_info(stream, name)
        .await
        .map_err(|e| err(&e))?;
    Ok(info_json(ctx, &info))
}

async fn consumer_delete(ctx: &ConnCtx, stream: &str, name: &str) -> Result<SuccessJson, ApiError> {
    ctx.shared
        .backend
        .delete_consumer(stream, name)
        .await
        .map_err(|e| err(&e))?;
    ctx.shared.push.stop(stream, name);
    Ok(SuccessJson { success: true })
}

async fn consumer_names(
    b: &dyn Backend,
    stream: &str,
    body: &[u8],
) -> Result<ConsumerNamesResponseJson, ApiError> {
    let req: ConsumerListRequestJson = parse(body)?;
    let names: Vec<String> = b
        .list_consumers(stream)
        .await
        .map_err(|e| err(&e))?
        .into_iter()
        .map(|c| c.name)
        .collect();
    Ok(ConsumerNamesResponseJson {
        paged: paged(names.len(), req.offset, NAMES_PAGE),
        consumers: page(&names, req.offset, NAMES_PAGE),
    })
}

async fn consumer_list(
    ctx: &ConnCtx,
    stream: &str,
    body: &[u8],
) -> Result<ConsumerListResponseJson, ApiError> {
    let req: ConsumerListRequestJson = parse(body)?;
    let infos: Vec<ConsumerInfoJson> = ctx
        .shared
        .backend
        .list_consumers(stream)
        .await
        .map_err(|e| err(&e))?
        .iter()
        .map(|c| info_json(ctx, c))
        .collect();
    Ok(ConsumerListResponseJson {
        paged: paged(infos.len(), req.offset, LIST_PAGE),
        consumers: page(&infos, req.offset, LIST_PAGE),
        missing: Vec::new(),
    })
}

//! Messages: history and posting at `/api/v1/chat/<room_id>/`, read receipts at
//! `/api/v1/messages/<id>/update/`, and the send and mark-read operations the WebSocket
//! handler shares, so REST and WebSocket behave the same.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::auth::{authenticate_token, authenticated, token_from_header, token_key};
use crate::error::ApiError;
use crate::filters::{json_body, non_negative_param, with_state};
use crate::hub::{Event, EventKind};
use crate::model::Auth;
use crate::model::{Message, MessageId, RoomId, User};
use crate::ratelimit::retry_after_secs;
use crate::state::AppState;
use crate::store::api::NewMessage;
use crate::store::messages::{Page, ReadMark};
use crate::store::now_ms;
use crate::store::rooms::RoomRef;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;
const MAX_CLIENT_ID_CHARS: usize = 128;

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let history = warp::path!("api" / "v1" / "chat" / String)
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state(state))
        .then(history)
        .map(Reply::into_response);
    let post = warp::path!("api" / "v1" / "chat" / String)
        .and(warp::post())
        .and(authenticated(state))
        .and(json_body(state.config.limits.max_body_bytes))
        .and(with_state(state))
        .then(post)
        .map(Reply::into_response);
    let read = warp::path!("api" / "v1" / "messages" / String / "update")
        .and(warp::patch())
        .and(authenticated(state))
        .and(with_state(state))
        .then(mark_read_route)
        .map(Reply::into_response);
    history.or(post).unify().or(read).unify().boxed()
}

/// The room with this public id if the caller is a member; 404 otherwise, so a non-member
/// cannot tell whether it exists.
/// Our room ids are short alphanumeric strings; anything else cannot name a room and costs
/// no query.
fn plausible_room_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub async fn room_for_member(
    state: &AppState,
    public_id: String,
    user: &User,
) -> Result<RoomRef, ApiError> {
    if !plausible_room_id(&public_id) {
        return Err(ApiError::NotFound);
    }
    let user = user.id;
    state
        .store
        .room_for_member(public_id, user)
        .await?
        .ok_or(ApiError::NotFound)
}

/// The page a history request asks for: `(page, limit)`.
fn history_query(query: &HashMap<String, String>) -> Result<(Page, u32), ApiError> {
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::validation("limit", "must be a positive integer"))?
            .min(MAX_PAGE),
    };
    let before = non_negative_param(query, "before")?.map(MessageId);
    let after = non_negative_param(query, "after")?.map(MessageId);
    let page = match (before, after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(
                "after",
                "cannot be combined with before",
            ));
        }
        (before, None) => Page::Before(before),
        (None, Some(after)) => Page::After(after),
    };
    Ok((page, limit))
}

/// For handlers that authenticate in the same trip to the database as their other reads: the
/// token's digest and what was asked, once the request is well-formed. A malformed request
/// still answers a stranger 401 before anything else.
pub async fn member_request<T>(
    state: &AppState,
    token: Option<&str>,
    room_id: &str,
    asked: Result<T, ApiError>,
) -> Result<(Vec<u8>, T), ApiError> {
    let digest = token_key(token)?;
    let asked = asked.and_then(|asked| {
        plausible_room_id(room_id)
            .then_some(asked)
            .ok_or(ApiError::NotFound)
    });
    match asked {
        Ok(asked) => Ok((digest, asked)),
        Err(e) => {
            authenticate_token(state, token).await?;
            Err(e)
        }
    }
}

/// `GET /api/v1/chat/<room_id>/?limit=&before=|after=`: a page of history.
///
/// The hot read of the API, so it makes one trip to the database: the token, the membership
/// and the page, serialized straight from the rows.
async fn history(
    room_id: String,
    authorization: Option<String>,
    query: HashMap<String, String>,
    state: AppState,
) -> Result<warp::reply::Response, ApiError> {
    let token = authorization.as_deref().and_then(token_from_header);
    let (digest, (page, limit)) =
        member_request(&state, token, &room_id, history_query(&query)).await?;
    let body = state
        .store
        .history_json(digest, room_id, page, limit)
        .await?;
    let mut response = warp::reply::Response::new(body.into());
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    content: String,
    client_id: Option<String>,
}

/// `POST /api/v1/chat/<room_id>/`: stores a message and delivers it live.
async fn post(
    room_id: String,
    auth: Auth,
    body: PostBody,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let room = room_for_member(&state, room_id, &auth.user).await?;
    let (message, created) = send(&state, &auth.user, room, &body.content, body.client_id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(warp::reply::with_status(
        warp::reply::json(&message),
        status,
    ))
}

/// Checks content against the limits: trimmed, non-empty, not too long, no NUL.
pub fn validate_content(state: &AppState, content: &str) -> Result<String, ApiError> {
    let content = content.trim();
    let max = state.config.limits.max_message_chars;
    if content.is_empty() {
        return Err(ApiError::validation("content", "must not be empty"));
    }
    if content.chars().count() > max {
        return Err(ApiError::validation(
            "content",
            format!("must be at most {max} characters"),
        ));
    }
    if content.contains('\0') {
        return Err(ApiError::validation(
            "content",
            "must not contain NUL characters",
        ));
    }
    Ok(content.to_string())
}

/// `{"type":"message","message":{...}}`, serialized straight from the borrowed message.
#[derive(Serialize)]
struct MessageFrame<'a> {
    r#type: &'static str,
    message: &'a Message,
}

/// The frame every subscriber receives for a new message.
pub fn message_event(room: RoomId, message: &Message) -> Event {
    Event::new(
        room,
        EventKind::Message(message.id),
        &MessageFrame {
            r#type: "message",
            message,
        },
    )
}

/// A send that was accepted and queued for the database: resolves to the message and whether
/// it is new once its transaction committed.
pub use crate::store::api::Sending;

/// Validates, rate-limits, stores and publishes a message. Publication happens on the
/// writer right after the commit, so subscribers see messages in id order and never one that
/// is not durable. A repeated `client_id` returns the original (flag `false`) and publishes
/// nothing.
pub async fn send(
    state: &AppState,
    sender: &User,
    room: RoomRef,
    content: &str,
    client_id: Option<String>,
) -> Result<(Message, bool), ApiError> {
    Ok(submit(state, sender, room, content, client_id)?.await?)
}

/// The part of [`send`] that does not wait: validation and the rate limit, then the write is
/// queued. Sends submitted one after another commit in that order, so a connection can keep
/// several in flight and still have them stored in the order it sent them.
pub fn submit(
    state: &AppState,
    sender: &User,
    room: RoomRef,
    content: &str,
    client_id: Option<String>,
) -> Result<Sending, ApiError> {
    let content = validate_content(state, content)?;
    if client_id
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.chars().count() > MAX_CLIENT_ID_CHARS)
    {
        return Err(ApiError::validation(
            "client_id",
            format!("must be 1 to {MAX_CLIENT_ID_CHARS} characters"),
        ));
    }
    if let Err(wait) = state.limits.sends.take(&sender.id) {
        return Err(ApiError::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        });
    }
    let hub = state.hub.clone();
    let room_id = room.id;
    let sender = sender.clone();
    let timer = crate::metrics::METRICS.send_latency.start_timer();
    let message = NewMessage {
        room,
        sender,
        content,
        client_id,
    };
    let on_commit = Box::new(move |(message, created): &(Message, bool)| {
        if *created {
            crate::metrics::METRICS.messages_stored.inc();
            hub.publish(room_id, message_event(room_id, message));
        }
        drop(timer);
    });
    Ok(state.store.submit_message(message, now_ms(), on_commit)?)
}

/// Moves the caller's read mark and tells the room. `None`: no such message for this user.
pub async fn mark_read(
    state: &AppState,
    user: &User,
    message_id: MessageId,
) -> Result<Option<MessageId>, ApiError> {
    let hub = state.hub.clone();
    let user_id = user.id;
    let mark = state
        .store
        .mark_read(
            message_id,
            user_id,
            Box::new(move |mark: &Option<ReadMark>| {
                // Only a mark that moved is news; repeating a read broadcasts nothing.
                if let Some(mark) = mark.as_ref().filter(|m| m.moved) {
                    let event = Event::new(
                        mark.room.id,
                        EventKind::Read,
                        &json!({
                            "type": "read",
                            "room_id": mark.room.public_id,
                            "user_id": mark.user,
                            "message_id": mark.message_id,
                        }),
                    );
                    hub.publish(mark.room.id, event);
                }
            }),
        )
        .await?;
    Ok(mark.map(|m| m.message_id))
}

/// `PATCH /api/v1/messages/<message_id>/update/`: marks the message, and everything before it
/// in its room, read by the caller.
async fn mark_read_route(
    message_id: String,
    auth: Auth,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let id = message_id
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(MessageId)
        .ok_or(ApiError::NotFound)?;
    mark_read(&state, &auth.user, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(warp::reply::json(&json!({
        "message": "Message updated successfully.",
        "message_id": id,
    })))
}

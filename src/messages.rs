//! Messages over REST: history and posting at `/api/v1/chat/<room_id>/`, edits and deletions
//! at `/api/v1/messages/<id>/`, reactions at `/api/v1/messages/<id>/reactions/<emoji>/`, read
//! receipts at `/api/v1/messages/<id>/update/`. Sending and marking read are `chat` operations, shared
//! with the WebSocket.

use serde::Deserialize;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::auth::{authenticated, token_from_header};
use crate::chat::{
    Draft, delete_message, edit_message, mark_read, member_request, react, room_for_member, send,
};
use crate::error::ApiError;
use crate::filters::{FromQuery, Params, json_body, query, with_state};
use crate::model::Auth;
use crate::model::MessageId;
use crate::search::Query;
use crate::state::AppState;
use crate::store::messages::Page;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let history = warp::path!("api" / "v1" / "chat" / String)
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(query::<HistoryQuery>())
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
        // The seed's path for the same read receipt.
        .or(warp::path!("api" / "messages" / "v1" / String / "update").and(warp::patch()))
        .unify()
        .and(authenticated(state))
        .and(with_state(state))
        .then(mark_read_route)
        .map(Reply::into_response);
    let edit = warp::path!("api" / "v1" / "messages" / String)
        .and(warp::patch())
        .and(authenticated(state))
        .and(json_body(state.config.limits.max_body_bytes))
        .and(with_state(state))
        .then(edit_route)
        .map(Reply::into_response);
    let delete = warp::path!("api" / "v1" / "messages" / String)
        .and(warp::delete())
        .and(authenticated(state))
        .and(with_state(state))
        .then(delete_route)
        .map(Reply::into_response);
    let react_on = warp::path!("api" / "v1" / "messages" / String / "reactions" / String)
        .and(warp::put())
        .and(authenticated(state))
        .and(with_state(state))
        .then(|id, emoji, auth, state| react_route(id, emoji, auth, state, true))
        .map(Reply::into_response);
    let react_off = warp::path!("api" / "v1" / "messages" / String / "reactions" / String)
        .and(warp::delete())
        .and(authenticated(state))
        .and(with_state(state))
        .then(|id, emoji, auth, state| react_route(id, emoji, auth, state, false))
        .map(Reply::into_response);
    let mentions = warp::path!("api" / "v1" / "mentions")
        .and(warp::get())
        .and(authenticated(state))
        .and(query::<MentionsQuery>())
        .and(with_state(state))
        .then(mentions_route)
        .map(Reply::into_response);
    let search = warp::path!("api" / "v1" / "search")
        .and(warp::get())
        .and(authenticated(state))
        .and(query::<SearchQuery>())
        .and(with_state(state))
        .then(search_route)
        .map(Reply::into_response);
    history
        .or(post)
        .unify()
        .or(mentions)
        .unify()
        .or(search)
        .unify()
        .or(read)
        .unify()
        .or(edit)
        .unify()
        .or(delete)
        .unify()
        .or(react_on)
        .unify()
        .or(react_off)
        .unify()
        .boxed()
}

/// `PUT` (add) and `DELETE` (take back) `/api/v1/messages/<message_id>/reactions/<emoji>/`:
/// the caller's reaction, one emoji (URL-encoded). Idempotent; the message as it is now, also
/// delivered to the room as `message_updated` when something changed.
async fn react_route(
    message_id_text: String,
    emoji: String,
    auth: Auth,
    state: AppState,
    on: bool,
) -> Result<impl Reply, ApiError> {
    let id = message_id(&message_id_text)?;
    let emoji = percent_encoding::percent_decode_str(&emoji)
        .decode_utf8()
        .map_err(|_| ApiError::validation("emoji", "must be exactly one emoji"))?;
    let message = react(&state, &auth.user, id, &emoji, on).await?;
    Ok(warp::reply::json(&message))
}

/// `?limit=` of a page of messages: 1 and up (default 50), at most 200 (larger is clamped).
fn page_limit(query: &Params) -> Result<u32, ApiError> {
    Ok(query
        .positive("limit")?
        .map_or(DEFAULT_PAGE, |n| n.min(MAX_PAGE)))
}

/// `?limit=&before=` of the mentions list.
pub struct MentionsQuery {
    limit: u32,
    before: Option<MessageId>,
}

impl FromQuery for MentionsQuery {
    fn from_query(query: &Params) -> Result<MentionsQuery, ApiError> {
        let limit = page_limit(query)?;
        Ok(MentionsQuery {
            limit,
            before: query.non_negative("before")?.map(MessageId),
        })
    }
}

/// `GET /api/v1/mentions/?limit=&before=`: the messages that mention the caller, in rooms
/// they are a member of now, newest first: `{results: [message], next}`, `next` being the
/// `before` of the next page (null on the last).
async fn mentions_route(
    auth: Auth,
    query: Result<MentionsQuery, ApiError>,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let MentionsQuery { limit, before } = query?;
    let (results, next) = state.store.mentions_of(auth.user.id, before, limit).await?;
    Ok(warp::reply::json(
        &json!({"results": results, "next": next}),
    ))
}

/// `?q=&room_id=&limit=&before=` of a search.
pub struct SearchQuery {
    query: Query,
    room_id: Option<String>,
    limit: u32,
    before: Option<MessageId>,
}

impl FromQuery for SearchQuery {
    fn from_query(params: &Params) -> Result<SearchQuery, ApiError> {
        let query = Query::parse(params.get("q").unwrap_or_default())?;
        let MentionsQuery { limit, before } = MentionsQuery::from_query(params)?;
        Ok(SearchQuery {
            query,
            room_id: params.get("room_id").map(str::to_string),
            limit,
            before,
        })
    }
}

/// `GET /api/v1/search/?q=&room_id=&limit=&before=`: messages matching the words, phrases and
/// prefixes of `q` in the rooms the caller is a member of now (or only `room_id`), newest
/// first: `{results: [{message, hits}], next}`, `hits` the character ranges `[start, end)` of
/// the content that matched.
async fn search_route(
    auth: Auth,
    query: Result<SearchQuery, ApiError>,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let SearchQuery {
        query,
        room_id,
        limit,
        before,
    } = query?;
    if query.terms.is_empty() {
        return Ok(warp::reply::json(&json!({"results": [], "next": null})));
    }
    let (found, next) = state
        .store
        .search(auth.user.id, query.fts(), room_id, before, limit)
        .await?;
    let results: Vec<serde_json::Value> = found
        .iter()
        .map(|m| json!({"message": m, "hits": query.hits(&m.content)}))
        .collect();
    Ok(warp::reply::json(
        &json!({"results": results, "next": next}),
    ))
}

/// A message id in a path; anything else is a message nobody can see.
fn message_id(text: &str) -> Result<MessageId, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(MessageId)
        .ok_or(ApiError::NotFound)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    content: String,
}

/// `PATCH /api/v1/messages/<message_id>/`: the author replaces the content; the message as it
/// is now, also delivered to the room as `message_updated`.
async fn edit_route(
    message_id_text: String,
    auth: Auth,
    body: EditBody,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let id = message_id(&message_id_text)?;
    let message = edit_message(&state, &auth.user, id, &body.content).await?;
    Ok(warp::reply::json(&message))
}

/// `DELETE /api/v1/messages/<message_id>/`: the author (or a group's creator) deletes it; the
/// tombstone, also delivered to the room as `message_updated`.
async fn delete_route(
    message_id_text: String,
    auth: Auth,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let id = message_id(&message_id_text)?;
    let message = delete_message(&state, &auth.user, id).await?;
    Ok(warp::reply::json(&message))
}

/// `?limit=&before=&after=`: the page a history request asks for.
pub struct HistoryQuery {
    page: Page,
    limit: u32,
}

impl FromQuery for HistoryQuery {
    fn from_query(query: &Params) -> Result<HistoryQuery, ApiError> {
        let limit = page_limit(query)?;
        let before = query.non_negative("before")?.map(MessageId);
        let after = query.non_negative("after")?.map(MessageId);
        let page = match (before, after) {
            (Some(before), Some(after)) => Page::Between(after, before),
            (before, None) => Page::Before(before),
            (None, Some(after)) => Page::After(after),
        };
        Ok(HistoryQuery { page, limit })
    }
}

/// `GET /api/v1/chat/<room_id>/?limit=&before=&after=`: a page of history.
///
/// The hot read of the API, so it makes one trip to the database: the token, the membership
/// and the page, serialized straight from the rows.
async fn history(
    room_id: String,
    authorization: Option<String>,
    query: Result<HistoryQuery, ApiError>,
    state: AppState,
) -> Result<warp::reply::Response, ApiError> {
    let token = authorization.as_deref().and_then(token_from_header);
    let (digest, HistoryQuery { page, limit }) =
        member_request(&state, token, &room_id, query).await?;
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
pub struct PostBody {
    content: String,
    client_id: Option<String>,
    /// The id of the message of this room the new one answers.
    #[serde(default, deserialize_with = "crate::filters::json_int::option")]
    reply_to: Option<i64>,
    /// Upload ids to attach; `content` may then be "".
    #[serde(default)]
    attachments: Vec<String>,
}

/// `POST /api/v1/chat/<room_id>/`: stores a message and delivers it live.
async fn post(
    room_id: String,
    auth: Auth,
    body: PostBody,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let room = room_for_member(&state, room_id, &auth.user).await?;
    let draft = Draft {
        content: body.content,
        client_id: body.client_id,
        reply_to: body.reply_to.map(MessageId),
        attachments: body.attachments,
    };
    let (message, created) = send(&state, &auth.user, room, draft).await?;
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

/// `PATCH /api/v1/messages/<message_id>/update/` (and the seed's
/// `/api/messages/v1/<message_id>/update/`): marks the message, and everything before it in
/// its room, read by the caller.
async fn mark_read_route(
    message_id: String,
    auth: Auth,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let id = self::message_id(&message_id)?;
    mark_read(&state, &auth.user, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(warp::reply::json(&json!({
        "message": "Message updated successfully.",
        "message_id": id,
    })))
}

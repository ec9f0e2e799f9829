//! Incoming webhooks: a member of a group creates one at `/api/v1/chat/<room_id>/hooks/` and
//! gets a secret URL; anything that can `curl` then posts into that room through
//! `POST /api/v1/hooks/<secret>/` as the hook's own bot (a member of the room, marked
//! `is_bot`). The server never calls out: there is no outbound HTTP.
//!
//! A hook ends when its creator or an admin of the room deletes it, when its creator leaves or
//! is removed from the room, and when its bot is removed; a deactivated creator's hooks post
//! nothing. Posts are rate-limited like any sender's (per hook, as each has its own bot).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::account::Username;
use crate::auth::{authenticated, new_token, token_digest};
use crate::chat::{self, publish_joined, publish_removed};
use crate::error::ApiError;
use crate::filters::{json_body, with_state};
use crate::metrics::{Bound, METRICS};
use crate::model::Auth;
use crate::ratelimit::retry_after_secs;
use crate::state::AppState;
use crate::store::api::{HookCreated, MemberRemoved, NewHook};
use crate::store::now_ms;
use crate::store::users::NewUser;

/// Longest hook name, in characters after trimming.
const MAX_NAME_CHARS: usize = 64;
/// Most hooks one room may have ...
pub const MAX_HOOKS_PER_ROOM: i64 = 10;
/// ... and most live hooks one user may have made, over all rooms.
pub const MAX_HOOKS_PER_USER: i64 = 50;

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max = state.config.limits.max_body_bytes;
    let create = warp::path!("api" / "v1" / "chat" / String / "hooks")
        .and(warp::post())
        .and(authenticated(state))
        .and(json_body(max))
        .and(with_state(state))
        .then(create)
        .map(Reply::into_response);
    let list = warp::path!("api" / "v1" / "chat" / String / "hooks")
        .and(warp::get())
        .and(authenticated(state))
        .and(with_state(state))
        .then(list)
        .map(Reply::into_response);
    let delete = warp::path!("api" / "v1" / "chat" / String / "hooks" / String)
        .and(warp::delete())
        .and(authenticated(state))
        .and(with_state(state))
        .then(delete)
        .map(Reply::into_response);
    // The secret is read from the path's tail, not as a `path!` parameter: warp traces the
    // parameters it matches, and the secret must not reach even a TRACE log.
    let post = warp::path!("api" / "v1" / "hooks" / ..)
        .and(warp::path::tail())
        .map(|tail: warp::path::Tail| {
            let rest = tail.as_str();
            rest.strip_suffix('/').unwrap_or(rest).to_string()
        })
        .and(warp::post())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::content_length_limit(max))
        .and(warp::body::bytes())
        .and(with_state(state))
        .then(post)
        .map(Reply::into_response);
    create
        .or(list)
        .unify()
        .or(delete)
        .unify()
        .or(post)
        .unify()
        .boxed()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateHook {
    name: String,
}

/// `POST /api/v1/chat/<room_id>/hooks/`: a member of a group makes a hook; 201 with the hook,
/// its `secret` and its `url` (shown this once; only the secret's digest is kept).
async fn create(
    room_id: String,
    auth: Auth,
    body: CreateHook,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let name = body.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.contains('\0') {
        return Err(ApiError::validation(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters, not blank"),
        ));
    }
    let room = chat::room_for_member(&state, room_id, &auth.user).await?;
    // Each hook is an account: creating them is rate-limited like creating rooms.
    if let Err(wait) = state.limits.rooms_created.take(&auth.user.id) {
        METRICS.refused(Bound::RoomsCreated);
        return Err(ApiError::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        });
    }
    let mut suffix = [0u8; 5];
    rand::fill(&mut suffix);
    let username = Username::parse(&format!("hook-{}", hex::encode(suffix)))
        .map_err(|e| ApiError::internal(anyhow::anyhow!("hook username: {e}")))?;
    let secret = new_token();
    let new = NewHook {
        name: name.clone(),
        bot: NewUser::bot(username, name),
        digest: token_digest(&secret),
        max_per_room: MAX_HOOKS_PER_ROOM,
        max_per_user: MAX_HOOKS_PER_USER,
    };
    let hub = state.hub.clone();
    let on_commit = Box::new(move |created: &HookCreated| {
        publish_joined(hub.as_ref(), &created.added);
    });
    let HookCreated { hook, .. } = state
        .store
        .create_hook(room, auth.user.id, new, now_ms(), on_commit)
        .await?;
    let mut body = serde_json::to_value(&hook).map_err(ApiError::internal)?;
    body["secret"] = json!(secret);
    body["url"] = json!(format!("/api/v1/hooks/{secret}/"));
    Ok(warp::reply::with_status(
        warp::reply::json(&body),
        StatusCode::CREATED,
    ))
}

/// `GET /api/v1/chat/<room_id>/hooks/`: the room's hooks, oldest first, without secrets.
async fn list(room_id: String, auth: Auth, state: AppState) -> Result<impl Reply, ApiError> {
    let room = chat::room_for_member(&state, room_id, &auth.user).await?;
    let hooks = state.store.hooks(room).await?;
    Ok(warp::reply::json(&hooks))
}

/// `DELETE /api/v1/chat/<room_id>/hooks/<hook_id>/`: its creator or an admin of the room
/// ends a hook; its bot leaves the room. 204.
async fn delete(
    room_id: String,
    hook_id: String,
    auth: Auth,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let room = chat::room_for_member(&state, room_id, &auth.user).await?;
    let id = crate::model::ascii_digits(&hook_id, 18).ok_or(ApiError::NotFound)?;
    let hub = state.hub.clone();
    let on_commit = Box::new(move |removed: &MemberRemoved| publish_removed(hub.as_ref(), removed));
    state
        .store
        .delete_hook(room, auth.user.id, id, on_commit)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookPost {
    content: String,
    client_id: Option<String>,
}

/// `POST /api/v1/hooks/<secret>/`: `{content, client_id?}` as JSON, or the whole body as the
/// content with `Content-Type: text/plain`; 201 with the message, posted as the hook's bot.
/// A secret that names no live hook is a 404, whatever the body.
async fn post(
    secret: String,
    content_type: Option<String>,
    body: Bytes,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let plausible = secret.len() == 64
        && secret
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !plausible {
        return Err(ApiError::NotFound);
    }
    let (bot, room) = state
        .store
        .hook_sender(token_digest(&secret))
        .await?
        .ok_or(ApiError::NotFound)?;
    let plain = content_type
        .as_deref()
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/plain"));
    let HookPost { content, client_id } = if plain {
        let content = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::BadRequest("the body is not UTF-8 text".into()))?;
        HookPost {
            content,
            client_id: None,
        }
    } else {
        crate::filters::from_json(&body)?
    };
    let (message, created) =
        chat::send(&state, &bot, room, chat::Draft::text(content, client_id)).await?;
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

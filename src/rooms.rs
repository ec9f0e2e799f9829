//! `/api/v1/chats/`: the caller's rooms, and creating rooms (direct rooms are unique per pair).

use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::app::{AppState, json_body, with_state};
use crate::auth::{Auth, authenticated};
use crate::error::ApiError;
use crate::model::UserId;
use crate::store::{Result as StoreResult, now_ms, rooms, users};

/// Most members a room may be created with.
const MAX_MEMBERS: usize = 1000;
const MAX_NAME_CHARS: usize = 100;

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let list = warp::path!("api" / "v1" / "chats")
        .and(warp::get())
        .and(authenticated(state))
        .and(with_state(state))
        .then(list)
        .map(Reply::into_response);
    let create = warp::path!("api" / "v1" / "chats")
        .and(warp::post())
        .and(authenticated(state))
        .and(json_body(state.config.limits.max_body_bytes))
        .and(with_state(state))
        .then(create)
        .map(Reply::into_response);
    list.or(create).unify().boxed()
}

/// A new random public room id: 96 bits, URL-safe.
pub fn new_room_id() -> String {
    let mut bytes = [0u8; 12];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// `GET /api/v1/chats/`: rooms the caller belongs to, most recent activity first.
async fn list(auth: Auth, state: AppState) -> Result<impl Reply, ApiError> {
    let user = auth.user.id;
    let rooms = state.store.read(move |c| rooms::list_for(c, user)).await?;
    Ok(warp::reply::json(&rooms))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    members: Vec<i64>,
    name: Option<String>,
}

/// `POST /api/v1/chats/`: creates a room with the caller and `members`; asking again for the
/// direct room of a pair returns the existing one with 200.
async fn create(auth: Auth, body: CreateRoom, state: AppState) -> Result<impl Reply, ApiError> {
    let me = auth.user.id;
    let name = body
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NAME_CHARS)
    {
        return Err(ApiError::validation(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    let mut members: Vec<UserId> = body.members.into_iter().map(UserId).collect();
    members.push(me);
    members.sort();
    members.dedup();
    if members.len() < 2 {
        return Err(ApiError::validation(
            "members",
            "a room needs at least one member besides you",
        ));
    }
    if members.len() > MAX_MEMBERS {
        return Err(ApiError::validation(
            "members",
            format!("a room has at most {MAX_MEMBERS} members"),
        ));
    }
    let public_id = new_room_id();
    let (room, created) = state
        .store
        .write(move |c| -> StoreResult<Result<_, ApiError>> {
            let found = users::existing(c, &members)?;
            if found.len() != members.len() {
                let missing: Vec<String> = members
                    .iter()
                    .filter(|m| !found.contains(m))
                    .map(|m| m.0.to_string())
                    .collect();
                return Ok(Err(ApiError::validation(
                    "members",
                    format!("unknown users: {}", missing.join(", ")),
                )));
            }
            if name.is_none()
                && members.len() == 2
                && let Some(existing) = rooms::find_direct(c, members[0], members[1])?
            {
                return Ok(Ok((rooms::view(c, &existing, me)?, false)));
            }
            let new = rooms::NewRoom {
                public_id: &public_id,
                name: name.as_deref(),
                creator: me,
                members: &members,
            };
            let room = rooms::insert(c, &new, now_ms())?;
            Ok(Ok((rooms::view(c, &room, me)?, true)))
        })
        .await??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(warp::reply::with_status(warp::reply::json(&room), status))
}

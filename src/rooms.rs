//! Rooms: `/api/v1/chats/` (the caller's rooms, creating rooms; direct rooms are unique per
//! pair) and membership at `/api/v1/chat/<room_id>/members/`.

use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::auth::authenticated;
use crate::chat;
use crate::error::ApiError;
use crate::filters::{FromQuery, Params, json_body, query, with_state};
use crate::model::Auth;
use crate::model::UserId;
use crate::state::AppState;
use crate::store::api::RoomChange;
use crate::store::rooms::RoomCursor;

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let list = warp::path!("api" / "v1" / "chats")
        .and(warp::get())
        .and(authenticated(state))
        .and(query::<RoomsQuery>())
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
    let add = warp::path!("api" / "v1" / "chat" / String / "members")
        .and(warp::post())
        .and(authenticated(state))
        .and(json_body(state.config.limits.max_body_bytes))
        .and(with_state(state))
        .then(add_member)
        .map(Reply::into_response);
    let remove = warp::path!("api" / "v1" / "chat" / String / "members" / String)
        .and(warp::delete())
        .and(authenticated(state))
        .and(with_state(state))
        .then(remove_member)
        .map(Reply::into_response);
    let rename = warp::path!("api" / "v1" / "chat" / String)
        .and(warp::patch())
        .and(authenticated(state))
        .and(json_body(state.config.limits.max_body_bytes))
        .and(with_state(state))
        .then(rename)
        .map(Reply::into_response);
    let make_admin = warp::path!("api" / "v1" / "chat" / String / "admins" / String)
        .and(warp::put())
        .and(authenticated(state))
        .and(with_state(state))
        .then(make_admin)
        .map(Reply::into_response);
    list.or(create)
        .unify()
        .or(rename)
        .unify()
        .or(make_admin)
        .unify()
        .or(add)
        .unify()
        .or(remove)
        .unify()
        .boxed()
}

/// `?limit=&before=`.
pub struct RoomsQuery {
    limit: Option<u32>,
    before: Option<RoomCursor>,
}

impl FromQuery for RoomsQuery {
    fn from_query(params: &Params) -> Result<RoomsQuery, ApiError> {
        let before = params
            .get("before")
            .map(|c| {
                RoomCursor::parse(c).ok_or_else(|| {
                    ApiError::validation("before", "must be a cursor from a Link header")
                })
            })
            .transpose()?;
        Ok(RoomsQuery {
            limit: params.positive("limit")?,
            before,
        })
    }
}

/// `GET /api/v1/chats/`: a page of the rooms the caller belongs to, most recent activity
/// first: a JSON array (the shape clients of the unpaginated list read), with the next page in
/// a `Link: <...>; rel="next"` header when there is one. `?limit=` (default
/// `limits.rooms_page_default`, at most `limits.rooms_page_max`) and `?before=<cursor>`.
async fn list(
    auth: Auth,
    query: Result<RoomsQuery, ApiError>,
    state: AppState,
) -> Result<warp::reply::Response, ApiError> {
    let RoomsQuery { limit, before } = query?;
    let l = &state.config.limits;
    let limit = limit.map_or(l.rooms_page_default, |n| n.min(l.rooms_page_max));
    let (rooms, next) = state.store.rooms_page(auth.user.id, before, limit).await?;
    let mut response = warp::reply::json(&rooms).into_response();
    if let Some(next) = next {
        let link = format!("</api/v1/chats/?limit={limit}&before={next}>; rel=\"next\"");
        response.headers_mut().insert(
            warp::http::header::LINK,
            warp::http::HeaderValue::from_str(&link).map_err(ApiError::internal)?,
        );
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    #[serde(deserialize_with = "crate::filters::json_int::many")]
    members: Vec<i64>,
    name: Option<String>,
}

/// `POST /api/v1/chats/`: creates a room with the caller and `members`; asking again for the
/// direct room of a pair returns the existing one with 200.
async fn create(auth: Auth, body: CreateRoom, state: AppState) -> Result<impl Reply, ApiError> {
    let (room, created) = chat::create_room(&state, auth.user.id, body.name, body.members).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(warp::reply::with_status(warp::reply::json(&room), status))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    #[serde(deserialize_with = "crate::filters::json_int::one")]
    user_id: i64,
}

/// `POST /api/v1/chat/<room_id>/members/`: any member adds a user to a group room.
async fn add_member(
    room_id: String,
    auth: Auth,
    body: AddMember,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let room = chat::room_for_member(&state, room_id, &auth.user).await?;
    let (view, added) = chat::add_member(&state, room, auth.user.id, UserId(body.user_id)).await?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(warp::reply::with_status(warp::reply::json(&view), status))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    name: String,
}

/// `PATCH /api/v1/chat/<room_id>/`: an admin renames a group.
async fn rename(
    room_id: String,
    auth: Auth,
    body: Rename,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let room = chat::room_for_member(&state, room_id, &auth.user).await?;
    let view = chat::manage_room(&state, room, auth.user.id, RoomChange::Rename(body.name)).await?;
    Ok(warp::reply::json(&view))
}

/// `PUT /api/v1/chat/<room_id>/admins/<user_id>/`: an admin makes a member an admin.
async fn make_admin(
    room_id: String,
    user_id: String,
    auth: Auth,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let room = chat::room_for_member(&state, room_id, &auth.user).await?;
    let user = user_id
        .parse::<i64>()
        .map(UserId)
        .map_err(|_| ApiError::NotFound)?;
    let view = chat::manage_room(&state, room, auth.user.id, RoomChange::MakeAdmin(user)).await?;
    Ok(warp::reply::json(&view))
}

/// `DELETE /api/v1/chat/<room_id>/members/<user_id>/`: a member leaves, or an admin removes
/// someone. The removed user's sockets to the room close at once.
async fn remove_member(
    room_id: String,
    user_id: String,
    auth: Auth,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let room = chat::room_for_member(&state, room_id, &auth.user).await?;
    let user_id = user_id
        .parse::<i64>()
        .map(UserId)
        .map_err(|_| ApiError::NotFound)?;
    chat::remove_member(&state, room, auth.user.id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

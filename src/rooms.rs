//! Rooms: `/api/v1/chats/` (the caller's rooms, creating rooms; direct rooms are unique per
//! pair) and membership at `/api/v1/chat/<room_id>/members/`.

use serde::Deserialize;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::auth::authenticated;
use crate::error::ApiError;
use crate::filters::{json_body, with_state};
use crate::hub::{Event, EventKind, Hub};
use crate::messages::room_for_member;
use crate::model::Auth;
use crate::model::{Room, RoomId, User, UserId};
use crate::state::AppState;
use crate::store::api::{CreatedRoom, MemberAdded, MemberRemoved, NewRoom};
use crate::store::now_ms;

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
    list.or(create)
        .unify()
        .or(add)
        .unify()
        .or(remove)
        .unify()
        .boxed()
}

/// `{"type":"room"}`: tells a user's all-rooms sockets about a room they now belong to.
fn room_event(room_id: RoomId, room: &Room) -> Event {
    Event::new(
        room_id,
        EventKind::Room,
        &json!({"type": "room", "room_id": room.room_id, "room": room}),
    )
}

/// `{"type":"member"}`: someone joined or left the room.
fn member_event(room_id: RoomId, public_id: &str, user: &User, added: bool) -> Event {
    Event::new(
        room_id,
        EventKind::Member {
            user: user.id,
            added,
        },
        &json!({"type": "member", "room_id": public_id, "user": user, "added": added}),
    )
}

/// After a user joined a room: their all-rooms sockets follow it and hear about it.
fn announce_joined(hub: &Hub, room_id: RoomId, room: &Room, user: &User) {
    if hub.add_member(room_id, user.id) {
        hub.publish(
            room_id,
            crate::ws::presence_event(room_id, &room.room_id, user, true),
        );
    }
    hub.notify_user(user.id, room_event(room_id, room));
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
    let rooms = state.store.rooms_of(user).await?;
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
    let new = NewRoom {
        public_id: new_room_id(),
        name,
        creator: me,
        members,
    };
    let CreatedRoom {
        view: room,
        created,
    } = state.store.create_room(new, now_ms()).await?;
    let status = match created {
        Some(room_id) => {
            for member in &room.members {
                announce_joined(&state.hub, room_id, &room, member);
            }
            StatusCode::CREATED
        }
        None => StatusCode::OK,
    };
    Ok(warp::reply::with_status(warp::reply::json(&room), status))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    user_id: i64,
}

/// `POST /api/v1/chat/<room_id>/members/`: any member adds a user to a group room.
async fn add_member(
    room_id: String,
    auth: Auth,
    body: AddMember,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let room = room_for_member(&state, room_id, &auth.user).await?;
    let me = auth.user.id;
    let user_id = UserId(body.user_id);
    let hub = state.hub.clone();
    let on_commit = Box::new(move |outcome: &MemberAdded| {
        if let Some(j) = &outcome.joined {
            hub.publish(
                j.room.id,
                member_event(j.room.id, &j.room.public_id, &j.user, true),
            );
            announce_joined(&hub, j.room.id, &j.view, &j.user);
        }
    });
    let MemberAdded {
        view,
        joined: added,
    } = state
        .store
        .add_member(room, me, user_id, now_ms(), on_commit)
        .await?;
    let added = added.is_some();
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(warp::reply::with_status(warp::reply::json(&view), status))
}

/// `DELETE /api/v1/chat/<room_id>/members/<user_id>/`: a member leaves, or the creator removes
/// someone. The removed user's sockets to the room close at once.
async fn remove_member(
    room_id: String,
    user_id: String,
    auth: Auth,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let room = room_for_member(&state, room_id, &auth.user).await?;
    let user_id = user_id
        .parse::<i64>()
        .map(UserId)
        .map_err(|_| ApiError::NotFound)?;
    let me = auth.user.id;
    let hub = state.hub.clone();
    let on_commit = Box::new(move |removed: &MemberRemoved| {
        let (room, user) = (&removed.room, &removed.user);
        // In-band: every socket of the removed user closes on this event, and nothing
        // published after it reaches them.
        hub.publish(room.id, member_event(room.id, &room.public_id, user, false));
        if hub.remove_member(room.id, user.id) {
            hub.publish(
                room.id,
                crate::ws::presence_event(room.id, &room.public_id, user, false),
            );
        }
    });
    state
        .store
        .remove_member(room, me, user_id, on_commit)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

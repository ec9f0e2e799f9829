//! Bots over the API: a person makes a bot (an account for a program, `is_bot`, with no
//! password) at `/api/v1/bots/` and gets its token, which does not expire; the owner lists
//! its bots, gives one a new token (revoking the old) and deactivates one. The operator's
//! equivalent is `chat-server bot create` / `bot token` / `user deactivate`.

use serde::Deserialize;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::account::Username;
use crate::auth::{authenticated, new_token, token_digest};
use crate::error::{ApiError, FieldErrors};
use crate::filters::{json_body, with_state};
use crate::metrics::{Bound, METRICS};
use crate::model::{Auth, UserId};
use crate::ratelimit::retry_after_secs;
use crate::state::AppState;
use crate::store::now_ms;
use crate::store::users::NewUser;

/// Most active bots one person may own.
pub const MAX_BOTS_PER_OWNER: i64 = 10;

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let create = warp::path!("api" / "v1" / "bots")
        .and(warp::post())
        .and(authenticated(state))
        .and(json_body(state.config.limits.max_body_bytes))
        .and(with_state(state))
        .then(create)
        .map(Reply::into_response);
    let list = warp::path!("api" / "v1" / "bots")
        .and(warp::get())
        .and(authenticated(state))
        .and(with_state(state))
        .then(list)
        .map(Reply::into_response);
    let token = warp::path!("api" / "v1" / "bots" / String / "token")
        .and(warp::post())
        .and(authenticated(state))
        .and(with_state(state))
        .then(token)
        .map(Reply::into_response);
    let delete = warp::path!("api" / "v1" / "bots" / String)
        .and(warp::delete())
        .and(authenticated(state))
        .and(with_state(state))
        .then(delete)
        .map(Reply::into_response);
    create
        .or(list)
        .unify()
        .or(token)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBot {
    username: String,
    #[serde(default)]
    first_name: String,
}

/// Bots are made by people: a bot's token cannot make more of them.
fn person(auth: &Auth) -> Result<(), ApiError> {
    if auth.user.is_bot {
        return Err(ApiError::Forbidden("a bot cannot own bots"));
    }
    Ok(())
}

/// `POST /api/v1/bots/`: 201 `{bot, token}`; the token is shown this once.
async fn create(auth: Auth, body: CreateBot, state: AppState) -> Result<impl Reply, ApiError> {
    person(&auth)?;
    let mut errors = FieldErrors::new();
    let username = Username::parse(&body.username)
        .map_err(|e| errors.insert("username", e.to_string()))
        .ok();
    let first_name = body.first_name.trim().to_string();
    if first_name.chars().count() > 150 || first_name.contains('\0') {
        errors.insert("first_name", "must be at most 150 characters".into());
    }
    let Some(username) = username.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    // Each bot is an account: making them is rate-limited like making rooms.
    if let Err(wait) = state.limits.rooms_created.take(&auth.user.id) {
        METRICS.refused(Bound::RoomsCreated);
        return Err(ApiError::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        });
    }
    let token = new_token();
    let new = NewUser::bot(username, first_name);
    let bot = state
        .store
        .create_owned_bot(
            auth.user.id,
            new,
            token_digest(&token),
            MAX_BOTS_PER_OWNER,
            now_ms(),
        )
        .await?;
    Ok(warp::reply::with_status(
        warp::reply::json(&json!({"bot": bot, "token": token})),
        StatusCode::CREATED,
    ))
}

/// `GET /api/v1/bots/`: the caller's active bots, oldest first.
async fn list(auth: Auth, state: AppState) -> Result<impl Reply, ApiError> {
    let bots = state.store.owned_bots(auth.user.id).await?;
    Ok(warp::reply::json(&bots))
}

fn bot_id(text: &str) -> Result<UserId, ApiError> {
    crate::model::ascii_digits(text, 18)
        .map(UserId)
        .ok_or(ApiError::NotFound)
}

/// `POST /api/v1/bots/<user_id>/token/`: 201 `{token}`, the bot's only token from now on; the
/// sockets opened with the old ones close (4001).
async fn token(bot: String, auth: Auth, state: AppState) -> Result<impl Reply, ApiError> {
    person(&auth)?;
    let bot = bot_id(&bot)?;
    let token = new_token();
    let revoked = state
        .store
        .replace_bot_token(auth.user.id, bot, token_digest(&token), now_ms())
        .await?;
    state.connections.revoke(&revoked);
    Ok(warp::reply::with_status(
        warp::reply::json(&json!({"token": token})),
        StatusCode::CREATED,
    ))
}

/// `DELETE /api/v1/bots/<user_id>/`: deactivates the bot: its tokens stop working and its
/// sockets close. 204.
async fn delete(bot: String, auth: Auth, state: AppState) -> Result<impl Reply, ApiError> {
    person(&auth)?;
    let bot = bot_id(&bot)?;
    let revoked = state.store.deactivate_bot(auth.user.id, bot).await?;
    state.connections.revoke(&revoked);
    Ok(StatusCode::NO_CONTENT)
}

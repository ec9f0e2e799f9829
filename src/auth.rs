//! Accounts and sessions: `/api/v1/signup/`, `/login/`, `/api-token-auth/`, `/logout/`,
//! `/tokens/` (list and revoke one's sessions), the token filter every protected route uses,
//! and password hashing.
//!
//! Passwords are hashed with argon2id on the blocking pool. Tokens are 256 random bits, given
//! to the client once and stored only as their SHA-256 digest.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::account::{self, Username};
use crate::config::Signup;
use crate::error::{ApiError, FieldErrors};
use crate::filters::{FromQuery, Params, form_or_json_body, query, with_state};
use crate::metrics::{Bound, METRICS};
use crate::model::{Auth, Millis};
use crate::passwords::blocking;
use crate::ratelimit::retry_after_secs;
use crate::state::{AppState, ClientAddr};
use crate::store::{now_ms, users};

/// The key an address is throttled under: an IPv6 client usually holds a whole /64, so it is
/// throttled as one; IPv4 (and IPv4-mapped IPv6) addresses as themselves.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::from(segments)
            }
        },
        v4 => v4,
    }
}

pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// The token from an `Authorization: Token <t>` or `Authorization: Bearer <t>` header.
pub fn token_from_header(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then_some(token)
        .filter(|t| !t.is_empty())
}

/// The digest a raw token is looked up by. A missing token, or one that cannot be ours (ours
/// are 64 hex characters), is a 401 without a query.
pub fn token_key(token: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let token = token.ok_or(ApiError::Unauthorized)?;
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::Unauthorized);
    }
    Ok(token_digest(&token.to_ascii_lowercase()))
}

/// Resolves a raw token to its live session.
pub async fn authenticate_token(state: &AppState, token: Option<&str>) -> Result<Auth, ApiError> {
    let digest = token_key(token)?;
    state
        .store
        .session(digest)
        .await?
        .ok_or(ApiError::Unauthorized)
}

/// Filter: the authenticated caller, or a 401 rejection.
pub fn authenticated(
    state: &AppState,
) -> impl Filter<Extract = (Auth,), Error = Rejection> + Clone + use<> {
    warp::header::optional::<String>("authorization")
        .and(with_state(state))
        .and_then(|header: Option<String>, state: AppState| async move {
            let token = header.as_deref().and_then(token_from_header);
            authenticate_token(&state, token)
                .await
                .map_err(Rejection::from)
        })
}

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let max = state.config.limits.max_body_bytes;
    let signup_route = warp::path!("api" / "v1" / "signup")
        .and(warp::post())
        .and(form_or_json_body(max))
        .and(warp::ext::optional::<ClientAddr>())
        .and(with_state(state))
        .then(signup)
        .map(Reply::into_response);
    let login_route = warp::path!("api" / "v1" / "login")
        .and(warp::post())
        .and(form_or_json_body(max))
        .and(warp::ext::optional::<ClientAddr>())
        .and(with_state(state))
        .then(|body, addr, state| login(body, addr, state, LoginShape::Full))
        .map(Reply::into_response);
    let token_route = warp::path!("api" / "v1" / "api-token-auth")
        .and(warp::post())
        .or(warp::path!("api-token-auth").and(warp::post()))
        .unify()
        .and(form_or_json_body(max))
        .and(warp::ext::optional::<ClientAddr>())
        .and(with_state(state))
        .then(|body, addr, state| login(body, addr, state, LoginShape::TokenOnly))
        .map(Reply::into_response);
    let logout_route = warp::path!("api" / "v1" / "logout")
        .and(warp::post())
        .and(authenticated(state))
        .and(query::<LogoutQuery>())
        .and(with_state(state))
        .then(logout)
        .map(Reply::into_response);
    let list_tokens_route = warp::path!("api" / "v1" / "tokens")
        .and(warp::get())
        .and(authenticated(state))
        .and(with_state(state))
        .then(list_tokens)
        .map(Reply::into_response);
    let revoke_all_route = warp::path!("api" / "v1" / "tokens")
        .and(warp::delete())
        .and(authenticated(state))
        .and(with_state(state))
        .then(revoke_all)
        .map(Reply::into_response);
    let revoke_route = warp::path!("api" / "v1" / "tokens" / String)
        .and(warp::delete())
        .and(authenticated(state))
        .and(with_state(state))
        .then(revoke_token)
        .map(Reply::into_response);
    signup_route
        .or(login_route)
        .unify()
        .or(token_route)
        .unify()
        .or(logout_route)
        .unify()
        .or(list_tokens_route)
        .unify()
        .or(revoke_all_route)
        .unify()
        .or(revoke_route)
        .unify()
        .boxed()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    username: String,
    password: String,
    password2: Option<String>,
    /// The seed's name for `password2`; either or both may be given.
    #[serde(rename = "passwordTwo")]
    password_two: Option<String>,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    email: String,
}

/// The field errors of a sign-up, and its username if that one is valid.
pub fn validate_signup(b: &SignupBody) -> (FieldErrors, Option<Username>) {
    let mut errors = FieldErrors::new();
    let username = match Username::parse(&b.username) {
        Ok(name) => Some(name),
        Err(e) => {
            errors.insert("username", e.to_string());
            None
        }
    };
    let shown = username
        .as_ref()
        .map_or(b.username.as_str(), |u| &u.display);
    if let Some(problem) = account::password_problem(shown, &b.password) {
        errors.insert("password", problem.into());
    }
    if [&b.password2, &b.password_two]
        .into_iter()
        .any(|again| again.as_ref().is_some_and(|p| *p != b.password))
    {
        errors.insert("password2", "passwords do not match".into());
    }
    for (field, value) in [("first_name", &b.first_name), ("last_name", &b.last_name)] {
        if value.chars().count() > 150 {
            errors.insert(field, "must be at most 150 characters".into());
        }
    }
    if !b.email.is_empty() {
        let valid = b.email.len() <= 254
            && b.email
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            && !b.email.chars().any(char::is_whitespace);
        if !valid {
            errors.insert("email", "must be a valid email address".into());
        }
    }
    (errors, username)
}

/// `POST /api/v1/signup/`: creates an account, unless signups are closed or the client's
/// address has used up its signups.
async fn signup(
    body: SignupBody,
    addr: Option<ClientAddr>,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    if state.config.auth.signup == Signup::Closed {
        return Err(ApiError::Forbidden(
            "signups are closed on this server: ask its administrator for an account",
        ));
    }
    let (errors, username) = validate_signup(&body);
    let Some(username) = username.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    // After validation, so a typo costs nothing; before hashing, so a flood costs no CPU.
    let ip: IpAddr = addr.map_or(IpAddr::from([0, 0, 0, 0]), |a| ip_key(a.0.ip()));
    state.limits.signups.take(&ip).map_err(|wait| {
        METRICS.refused(Bound::Signups);
        ApiError::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        }
    })?;
    let passwords = state.passwords.clone();
    let password = body.password.clone();
    let password_hash = blocking(&state.passwords, move || passwords.hash(&password))
        .await?
        .map_err(ApiError::Internal)?;
    let new = users::NewUser {
        username,
        password_hash,
        first_name: body.first_name,
        last_name: body.last_name,
        email: body.email,
    };
    let user = state.store.create_user(new, now_ms()).await?;
    Ok(warp::reply::with_status(
        warp::reply::json(&user),
        StatusCode::CREATED,
    ))
}

#[derive(Deserialize)]
pub struct LoginBody {
    username: String,
    password: String,
}

enum LoginShape {
    Full,
    TokenOnly,
}

/// `POST /api/v1/login/` and `POST /api/v1/api-token-auth/` (also at `/api-token-auth/`, where
/// the seed had it): exchanges credentials for a token.
async fn login(
    body: LoginBody,
    addr: Option<ClientAddr>,
    state: AppState,
    shape: LoginShape,
) -> Result<warp::reply::Response, ApiError> {
    // Without a peer address (never the case for a real connection) all such attempts share
    // one key.
    let ip: IpAddr = addr.map_or(IpAddr::from([0, 0, 0, 0]), |a| ip_key(a.0.ip()));
    // No account has a longer name; such a key would only bloat the throttle's memory.
    let user_key =
        (body.username.chars().count() <= account::MAX_CHARS).then(|| account::key(&body.username));
    let attempt = state
        .limits
        .login
        .begin(user_key.as_deref(), ip)
        .map_err(|wait| ApiError::RateLimited {
            retry_after_secs: retry_after_secs(wait),
        })?;
    if !attempt.delay.is_zero() {
        tokio::time::sleep(attempt.delay).await;
    }

    let username = body.username.clone();
    let creds = state.store.credentials(username).await?;
    let passwords = state.passwords.clone();
    let (user, hash) = match creds {
        // A bot has no password: it is refused after the same work as a wrong one.
        Some(c) if c.is_active && !c.user.is_bot => (Some(c.user), Some(c.password_hash)),
        _ => (None, None),
    };
    let password = body.password;
    let ok = blocking(&state.passwords, move || {
        passwords.verify(&password, hash.as_deref())
    })
    .await?;
    let user = match (ok, user) {
        (true, Some(user)) => user,
        _ => return Err(ApiError::BadCredentials),
    };
    // Successful logins do not count, and make this address known for the account.
    state.limits.login.succeeded(attempt);

    let token = new_token();
    let digest = token_digest(&token);
    let now = now_ms();
    let ttl = Duration::from_secs(state.config.auth.token_ttl_hours * 3600);
    let expires_at = now.saturating_add(ttl.as_millis() as i64);
    let user_id = user.id;
    state
        .store
        .open_session(user_id, digest, now, expires_at)
        .await?;
    let body = match shape {
        LoginShape::Full => json!({
            "token": token,
            "expires_at": Millis(expires_at),
            "user": user,
        }),
        // `access` for a client of the seed, which read a JWT under that name and sends it
        // back as `Authorization: Bearer <access>`: this token works there too.
        LoginShape::TokenOnly => json!({ "token": token, "access": token }),
    };
    Ok(warp::reply::json(&body).into_response())
}

/// `?all=1|0`: whether a logout ends every session of the caller.
pub struct LogoutQuery {
    all: bool,
}

impl FromQuery for LogoutQuery {
    fn from_query(query: &Params) -> Result<LogoutQuery, ApiError> {
        let all = match query.get("all") {
            None | Some("0" | "false") => false,
            Some("1" | "true") => true,
            Some(_) => return Err(ApiError::validation("all", "must be 1 or 0")),
        };
        Ok(LogoutQuery { all })
    }
}

/// `POST /api/v1/logout/`: revokes the token used for this request; with `?all=1`, every
/// token of the caller (log out everywhere).
async fn logout(
    auth: Auth,
    query: Result<LogoutQuery, ApiError>,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    if query?.all {
        return revoke_all(auth, state).await;
    }
    let token_id = auth.token_id;
    state.store.end_session(token_id).await?;
    state.connections.revoke(&[token_id]);
    Ok(StatusCode::NO_CONTENT)
}

/// A session in `GET /api/v1/tokens/`: enough to recognise and revoke it, never the token.
#[derive(Serialize)]
struct TokenView {
    id: i64,
    created: Millis,
    expires_at: Millis,
    /// True for the token that authenticated this request.
    current: bool,
}

/// `GET /api/v1/tokens/`: the caller's live sessions, newest first.
async fn list_tokens(auth: Auth, state: AppState) -> Result<impl Reply, ApiError> {
    let user = auth.user.id;
    let rows = state.store.sessions_of(user, now_ms()).await?;
    let views: Vec<TokenView> = rows
        .into_iter()
        .map(|t| TokenView {
            id: t.id,
            created: Millis(t.created),
            expires_at: Millis(t.expires_at),
            current: t.id == auth.token_id,
        })
        .collect();
    Ok(warp::reply::json(&views))
}

/// `DELETE /api/v1/tokens/<id>/`: revokes one of the caller's sessions and closes the sockets
/// opened with it; someone else's token is a 404, exactly like a token that does not exist.
async fn revoke_token(id: String, auth: Auth, state: AppState) -> Result<StatusCode, ApiError> {
    let id = id
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or(ApiError::NotFound)?;
    let user = auth.user.id;
    let deleted = state.store.end_session_of(user, id).await?;
    if !deleted {
        return Err(ApiError::NotFound);
    }
    state.connections.revoke(&[id]);
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/tokens/` (and `POST /api/v1/logout/?all=1`): revokes every session of the
/// caller, this one included.
async fn revoke_all(auth: Auth, state: AppState) -> Result<StatusCode, ApiError> {
    let user = auth.user.id;
    let ids = state.store.end_sessions_of(user).await?;
    state.connections.revoke(&ids);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_header_accepts_token_and_bearer() {
        assert_eq!(token_from_header("Token abc"), Some("abc"));
        assert_eq!(token_from_header("bearer abc"), Some("abc"));
        assert_eq!(token_from_header("Basic abc"), None);
        assert_eq!(token_from_header("Token "), None);
        assert_eq!(token_from_header("abc"), None);
    }

    #[test]
    fn ipv6_clients_are_throttled_per_64_and_ipv4_as_themselves() {
        let key = |s: &str| ip_key(s.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(key("10.1.2.3"), "10.1.2.3");
    }

    #[test]
    fn signup_validation_names_each_bad_field() {
        let body = SignupBody {
            username: "bad name!".into(),
            password: "12345678".into(),
            password2: Some("x".into()),
            password_two: None,
            first_name: String::new(),
            last_name: String::new(),
            email: "nope".into(),
        };
        let (e, name) = validate_signup(&body);
        assert!(name.is_none());
        assert_eq!(
            e.keys().copied().collect::<Vec<_>>(),
            ["email", "password", "password2", "username"]
        );
    }
}

//! `/api/v1/me/` and the user directory `/api/v1/users/`.

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::{Filter, Reply};

use crate::auth::authenticated;
use crate::error::ApiError;
use crate::filters::{FromQuery, Params, query, with_state};
use crate::model::Auth;
use crate::model::UserId;
use crate::state::AppState;
use crate::store::users::UserQuery;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

pub fn routes(state: &AppState) -> BoxedFilter<(warp::reply::Response,)> {
    let me = warp::path!("api" / "v1" / "me")
        .and(warp::get())
        .and(authenticated(state))
        .then(me)
        .map(Reply::into_response);
    let list = warp::path!("api" / "v1" / "users")
        .and(warp::get())
        .and(authenticated(state))
        .and(query::<DirectoryQuery>())
        .and(warp::header::optional::<String>("host"))
        .and(with_state(state))
        .then(list)
        .map(Reply::into_response);
    me.or(list).unify().boxed()
}

/// `GET /api/v1/me/`: the caller.
async fn me(auth: Auth) -> impl Reply {
    warp::reply::json(&auth.user)
}

/// `?limit=&offset=&exclude=1,2&search=`: a page of the directory.
pub struct DirectoryQuery {
    query: UserQuery,
    /// `exclude` and `search` as given, for the links to the next and previous pages.
    echo: Vec<(&'static str, String)>,
}

impl FromQuery for DirectoryQuery {
    fn from_query(params: &Params) -> Result<DirectoryQuery, ApiError> {
        let limit = params
            .positive("limit")?
            .map_or(DEFAULT_LIMIT, i64::from)
            .min(MAX_LIMIT);
        let offset = params.non_negative("offset")?.unwrap_or(0);
        let exclude = match params.get("exclude") {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|id| crate::model::ascii_digits(id, 18).map(UserId))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ApiError::validation("exclude", "must be comma-separated user ids")
                })?,
        };
        let search = params
            .get("search")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let echo = ["exclude", "search"]
            .into_iter()
            .filter_map(|key| params.get(key).map(|v| (key, v.to_string())))
            .collect();
        Ok(DirectoryQuery {
            query: UserQuery {
                search,
                exclude,
                limit,
                offset,
            },
            echo,
        })
    }
}

fn page_url(host: &str, echo: &[(&'static str, String)], limit: i64, offset: i64) -> String {
    let mut url = format!("http://{host}/api/v1/users/?limit={limit}&offset={offset}");
    for (key, v) in echo {
        url.push('&');
        url.push_str(key);
        url.push('=');
        url.push_str(&percent_encode(v));
    }
    url
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /api/v1/users/?limit=&offset=&exclude=1,2&search=`: active users, by first name.
async fn list(
    _auth: Auth,
    query: Result<DirectoryQuery, ApiError>,
    host: Option<String>,
    state: AppState,
) -> Result<impl Reply, ApiError> {
    let DirectoryQuery { query: q, echo } = query?;
    let (limit, offset) = (q.limit, q.offset);
    let (count, results) = state.store.directory(q).await?;
    // Only a well-formed Host goes into the links.
    let host = host
        .filter(|h| {
            !h.is_empty()
                && h.len() < 256
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or_else(|| "localhost".into());
    let next = (offset.saturating_add(limit) < count)
        .then(|| page_url(&host, &echo, limit, offset + limit));
    let previous = (offset > 0).then(|| page_url(&host, &echo, limit, (offset - limit).max(0)));
    Ok(warp::reply::json(&json!({
        "count": count,
        "next": next,
        "previous": previous,
        "results": results,
    })))
}

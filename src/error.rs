//! The one error type of the HTTP API, its JSON shape, and the `recover` that turns warp's own
//! rejections (unknown route, wrong method, oversized body, ...) into that same shape.

use std::collections::BTreeMap;
use std::convert::Infallible;

use serde::Serialize;
use warp::http::StatusCode;
use warp::http::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use warp::{Rejection, Reply};

pub use crate::model::ErrorCode;
use crate::store::{Refusal, StoreError};

/// Validation failures by field name.
pub type FieldErrors = BTreeMap<&'static str, String>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    #[error("some fields are invalid")]
    Validation(FieldErrors),
    #[error("authentication credentials were not provided or are invalid")]
    Unauthorized,
    #[error("invalid username or password")]
    BadCredentials,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    /// A well-formed request naming something (a user, a message) that does not exist or the
    /// caller cannot see: 404 `not_found`, with the field that named it.
    #[error("not found")]
    Missing(FieldErrors),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("request body is too large")]
    PayloadTooLarge,
    /// An upload over the size limit or the uploader's quota: 413 `payload_too_large`.
    #[error("{0}")]
    FileTooLarge(String),
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    UpgradeRequired(&'static str),
    /// The request's body did not arrive within `limits.body_read_timeout_secs`.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// The server's queues are full: 503 `overloaded`.
    #[error("the server is busy; retry after {OVERLOAD_RETRY_AFTER_SECS} s")]
    Overloaded,
    /// Writes fail for the storage: 503 `storage_full`.
    #[error(
        "the server cannot store anything now (its disk is full or failing); retry after \
         {STORAGE_RETRY_AFTER_SECS} s"
    )]
    StorageFull,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// `Retry-After` of an `overloaded` answer: queues drain in well under a second.
pub const OVERLOAD_RETRY_AFTER_SECS: u64 = 1;
/// `Retry-After` of a `storage_full` answer (and of `/healthz` meanwhile): an operator has to
/// free space, which takes longer.
pub const STORAGE_RETRY_AFTER_SECS: u64 = 10;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
    /// The message again where a client written for Django REST framework (the seed's)
    /// looks for it.
    detail: &'a str,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a FieldErrors>,
}

impl ApiError {
    pub fn validation(field: &'static str, why: impl Into<String>) -> Self {
        ApiError::Validation(BTreeMap::from([(field, why.into())]))
    }

    pub fn missing(field: &'static str, why: impl Into<String>) -> Self {
        ApiError::Missing(BTreeMap::from([(field, why.into())]))
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidJson(_) | ApiError::Validation(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized | ApiError::BadCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge | ApiError::FileTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            ApiError::Overloaded | ApiError::StorageFull => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::InvalidJson(_) => ErrorCode::InvalidJson,
            ApiError::Validation(_) => ErrorCode::ValidationError,
            ApiError::Unauthorized => ErrorCode::NotAuthenticated,
            ApiError::BadCredentials => ErrorCode::InvalidCredentials,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound | ApiError::Missing(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::PayloadTooLarge | ApiError::FileTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::UpgradeRequired(_) => ErrorCode::UpgradeRequired,
            ApiError::Overloaded => ErrorCode::Overloaded,
            ApiError::RequestTimeout => ErrorCode::RequestTimeout,
            ApiError::StorageFull => ErrorCode::StorageFull,
            ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// Counts the error, and logs it if it is internal: once per error answered, over HTTP
    /// or on a WebSocket.
    pub fn record(&self) {
        crate::metrics::METRICS.rejected(self.code());
        if let ApiError::Internal(err) = self {
            tracing::error!(error = format!("{err:#}"), "internal error");
        }
    }

    /// The reply: the JSON error shape with its status (and `Retry-After` when the client
    /// should come back later).
    pub fn response(&self) -> warp::reply::Response {
        self.record();
        let message = self.to_string();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().as_str(),
                message: message.clone(),
                fields: match self {
                    ApiError::Validation(fields) | ApiError::Missing(fields) => Some(fields),
                    _ => None,
                },
            },
            detail: &message,
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status()).into_response();
        if self.status() == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme that would work.
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
        }
        let retry_after = match self {
            ApiError::RateLimited { retry_after_secs } => Some((*retry_after_secs).max(1)),
            ApiError::Overloaded => Some(OVERLOAD_RETRY_AFTER_SECS),
            ApiError::StorageFull => Some(STORAGE_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        self.response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            // Like a room that does not exist: a non-member learns nothing about it.
            StoreError::NotMember => ApiError::NotFound,
            StoreError::Refused(refusal) => refusal.into(),
            StoreError::Overloaded => ApiError::Overloaded,
            // Logged once per episode by the store, not once per request.
            err if err.is_storage_fault() => ApiError::StorageFull,
            err => ApiError::Internal(err.into()),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unauthenticated => ApiError::Unauthorized,
            Refusal::NotFound => ApiError::NotFound,
            Refusal::DirectRoom => ApiError::Forbidden("direct rooms have exactly two members"),
            Refusal::NotAdmin => ApiError::Forbidden("only an admin of the group may do that"),
            Refusal::NoSuchUser => ApiError::missing("user_id", "no such user"),
            Refusal::UnknownUsers(ids) => {
                let ids: Vec<String> = ids.iter().map(|id| id.0.to_string()).collect();
                ApiError::missing("members", format!("unknown users: {}", ids.join(", ")))
            }
            Refusal::UsernameTaken => {
                ApiError::Conflict("a user with that username already exists")
            }
            Refusal::UsernameLookAlike => {
                ApiError::Conflict("that username looks too much like an existing one")
            }
            Refusal::NoSuchReply => ApiError::missing("reply_to", "no such message in this room"),
            Refusal::TooManyReactions => {
                ApiError::validation("emoji", "a message carries at most 20 different reactions")
            }
            Refusal::TooManyBots => ApiError::Conflict("you have as many bots as you may"),
            Refusal::TooManyHooks => ApiError::Conflict(
                "the room has as many hooks as it may, or you have made as many as you may",
            ),
            Refusal::NotAuthor => ApiError::Forbidden("only its author may edit a message"),
            Refusal::MayNotDelete => ApiError::Forbidden(
                "only its author, or an admin of the group, may delete a message",
            ),
            Refusal::MessageDeleted => ApiError::Conflict("the message was deleted"),
            Refusal::YouHaveTooManyRooms => ApiError::Conflict(
                "you are in as many rooms as this server allows: leave one first",
            ),
            Refusal::TheyHaveTooManyRooms => {
                ApiError::Conflict("a user you named is in as many rooms as this server allows")
            }
            Refusal::NoSuchUpload => ApiError::missing("attachments", "no such upload"),
            Refusal::UploadAttached => {
                ApiError::Conflict("an upload is attached to one message only")
            }
            Refusal::UploadQuota => ApiError::FileTooLarge(
                "the file would take you past your upload quota; delete messages with files to make room".into(),
            ),
            Refusal::TooManyRoomsFromYou => ApiError::Forbidden(
                "you have put a user you named in as many rooms as this server allows",
            ),
        }
    }
}

/// An `ApiError` raised inside a filter (auth, body parsing) travels as a rejection until
/// `recover` turns it into a reply.
#[derive(Debug)]
pub struct Rejected(pub ApiError);

impl warp::reject::Reject for Rejected {}

impl From<ApiError> for Rejection {
    fn from(err: ApiError) -> Self {
        warp::reject::custom(Rejected(err))
    }
}

/// Maps every rejection to the JSON error shape.
pub async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(Rejected(error)) = rejection.find::<Rejected>() {
        return Ok(error.response());
    }
    let error = if rejection.is_not_found() {
        ApiError::NotFound
    // `find` looks through every route's rejection; the method of another route on the same
    // path must not hide what was wrong with the request on the route that matched it.
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::PayloadTooLarge
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::BadRequest("a Content-Length header is required".into())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::BadRequest(format!("invalid query string: {e}"))
    } else if rejection.find::<warp::reject::InvalidHeader>().is_some()
        || rejection.find::<warp::reject::MissingHeader>().is_some()
    {
        ApiError::BadRequest("a required header is missing or invalid".into())
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::BadRequest("unsupported media type".into())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else {
        ApiError::Internal(anyhow::anyhow!("unhandled rejection: {rejection:?}"))
    };
    Ok(error.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once_at_its_own_index() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i, "{code:?}");
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}

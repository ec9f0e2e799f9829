//! The warp filters the features share: the state, JSON bodies, and query parameters.

use std::collections::HashMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use warp::{Filter, Rejection};

use crate::error::ApiError;
use crate::state::AppState;

pub fn with_state(
    state: &AppState,
) -> impl Filter<Extract = (AppState,), Error = std::convert::Infallible> + Clone + use<> {
    let state = state.clone();
    warp::any().map(move || state.clone())
}

/// A JSON body of at most `max` bytes, parsed into `T`; bad JSON is a 400 `invalid_json`.
pub fn json_body<T: DeserializeOwned + Send>(
    max: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone + use<T> {
    warp::body::content_length_limit(max)
        .and(warp::body::bytes())
        .and_then(|body: Bytes| async move { from_json(&body).map_err(Rejection::from) })
}

/// `body` parsed as JSON into `T`; bad JSON is a 400 `invalid_json`.
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice::<T>(body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

/// Like [`json_body`], and also `application/x-www-form-urlencoded` (what an HTML form posts,
/// and the seed's clients may send); bad form data is a 400 `invalid_json` too. A body that
/// opens with `{` is JSON whatever its type says: `curl -d '{...}'` labels JSON as a form.
pub fn form_or_json_body<T: DeserializeOwned + Send>(
    max: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone + use<T> {
    warp::body::content_length_limit(max)
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::bytes())
        .and_then(|content_type: Option<String>, body: Bytes| async move {
            from_form_or_json(content_type.as_deref(), &body).map_err(Rejection::from)
        })
}

/// `body` parsed into `T` as [`form_or_json_body`] reads it, given its `Content-Type`.
pub fn from_form_or_json<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, ApiError> {
    let form = content_type.is_some_and(|t| {
        t.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    let json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if form && !json {
        serde_urlencoded::from_bytes::<T>(body)
            .map_err(|e| ApiError::InvalidJson(format!("invalid form data: {e}")))
    } else {
        from_json(body)
    }
}

/// A request's query parameters, for [`FromQuery`] to read; a name given twice keeps its last
/// value.
pub struct Params(HashMap<String, String>);

impl From<HashMap<String, String>> for Params {
    fn from(map: HashMap<String, String>) -> Params {
        Params(map)
    }
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `name` as a non-negative integer, if present.
    pub fn non_negative(&self, name: &'static str) -> Result<Option<i64>, ApiError> {
        self.at_least(name, 0, "must be a non-negative integer")
    }

    /// `name` as a page size, if present: an integer from 1 to 4,294,967,295 (a route answers
    /// one larger than its largest page with its largest page).
    pub fn positive(&self, name: &'static str) -> Result<Option<u32>, ApiError> {
        self.at_least(name, 1, "must be a positive integer")
    }

    /// `name` as an integer of type `T` no smaller than `min`, if present; `why` otherwise.
    fn at_least<T: std::str::FromStr + PartialOrd>(
        &self,
        name: &'static str,
        min: T,
        why: &'static str,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<T>()
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| ApiError::validation(name, why))
            })
            .transpose()
    }
}

/// One endpoint's query parameters as a typed value.
pub trait FromQuery: Sized {
    fn from_query(params: &Params) -> Result<Self, ApiError>;
}

/// The query string read as `T`. A bad one is not rejected here but handed over, so the
/// handler reports it after authentication: a stranger learns nothing from parameter errors.
pub fn query<T: FromQuery + Send + 'static>()
-> impl Filter<Extract = (Result<T, ApiError>,), Error = Rejection> + Clone {
    warp::query::<HashMap<String, String>>().map(|map| T::from_query(&Params::from(map)))
}

/// Integers in request bodies as JSON Schema counts them: `7`, `7.0` and `7e0` are one
/// integer, so a body the API document allows is never refused for how a number is spelled.
/// For `#[serde(deserialize_with = "...")]` on `i64`, `Option<i64>` (with `default`) and
/// `Vec<i64>` fields.
pub mod json_int {
    use serde::de::{Deserialize, Deserializer, Error, Visitor};

    struct JsonInt(i64);

    impl<'de> Deserialize<'de> for JsonInt {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonInt, D::Error> {
            struct Int;
            impl Visitor<'_> for Int {
                type Value = JsonInt;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an integer")
                }
                fn visit_i64<E: Error>(self, v: i64) -> Result<JsonInt, E> {
                    Ok(JsonInt(v))
                }
                fn visit_u64<E: Error>(self, v: u64) -> Result<JsonInt, E> {
                    i64::try_from(v)
                        .map(JsonInt)
                        .map_err(|_| E::custom(format!("integer {v} is too large")))
                }
                fn visit_f64<E: Error>(self, v: f64) -> Result<JsonInt, E> {
                    // ±2^63 are left out: -2^63 is also what a number just below i64's
                    // range rounds to. Every other integral f64 inside fits exactly.
                    const EDGE: f64 = 9_223_372_036_854_775_808.0;
                    let fits = v.fract() == 0.0 && v > -EDGE && v < EDGE;
                    if fits {
                        Ok(JsonInt(v as i64))
                    } else {
                        Err(E::custom(format!("expected an integer, found {v}")))
                    }
                }
            }
            d.deserialize_any(Int)
        }
    }

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        JsonInt::deserialize(d).map(|n| n.0)
    }

    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<JsonInt>::deserialize(d).map(|n| n.map(|n| n.0))
    }

    pub fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
        Vec::<JsonInt>::deserialize(d).map(|v| v.into_iter().map(|n| n.0).collect())
    }
}

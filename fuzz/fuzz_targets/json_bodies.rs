//! The REST request bodies, read as the server reads them: `filters::from_json` (the
//! `json_body` filter) for the JSON-only routes, `filters::from_form_or_json` (the
//! `form_or_json_body` filter) for sign-up and login, then sign-up's validation. The first
//! byte picks the body type (and, for the form routes, the `Content-Type`); the rest is the
//! body.
//!
//! Checks: no panic; a refusal is always `invalid_json`; a body that opens with `{` is read
//! as JSON whatever its `Content-Type` says; with no `Content-Type` a form route reads JSON,
//! as the JSON routes do; a valid sign-up username parses again, from the name it is shown
//! as, to the same username.
#![no_main]

use chat_server::account::Username;
use chat_server::auth::{LoginBody, SignupBody, validate_signup};
use chat_server::bots::CreateBot;
use chat_server::error::ApiError;
use chat_server::filters::{from_form_or_json, from_json};
use chat_server::hooks::{CreateHook, HookPost};
use chat_server::messages::{EditBody, PostBody};
use chat_server::rooms::{AddMember, CreateRoom, Rename};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

const FORM: &str = "application/x-www-form-urlencoded";
const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some(FORM),
    Some("Application/X-WWW-Form-Urlencoded ; charset=utf-8"),
];

fn refused_as_invalid_json<T>(result: &Result<T, ApiError>) {
    if let Err(e) = result {
        assert!(matches!(e, ApiError::InvalidJson(_)), "refused as {e:?}");
    }
}

/// A JSON-only route's body.
fn json<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    let parsed = from_json::<T>(body);
    refused_as_invalid_json(&parsed);
    parsed.ok()
}

/// A form-or-JSON route's body, sent with `content_type`.
fn form_or_json<T: DeserializeOwned>(content_type: Option<&str>, body: &[u8]) -> Option<T> {
    let parsed = from_form_or_json::<T>(content_type, body);
    refused_as_invalid_json(&parsed);
    let opens_as_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let form = content_type.is_some_and(|t| t.to_ascii_lowercase().contains(FORM));
    if opens_as_json || !form {
        assert_eq!(
            parsed.is_ok(),
            from_json::<T>(body).is_ok(),
            "read otherwise than as JSON with {content_type:?}"
        );
    }
    parsed.ok()
}

fn signup(body: Option<SignupBody>) {
    let Some(body) = body else { return };
    let (errors, username) = validate_signup(&body);
    if let Some(name) = username {
        assert_eq!(
            Username::parse(&name.display).as_ref(),
            Ok(&name),
            "a username that does not parse back from its display form"
        );
    }
    // Every field error names a field of the body.
    for field in errors.keys() {
        assert!(
            [
                "username",
                "password",
                "password2",
                "first_name",
                "last_name",
                "email"
            ]
            .contains(field),
            "{field}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick >> 4) % CONTENT_TYPES.len()];
    match pick % 11 {
        0 => signup(json::<SignupBody>(body)),
        1 => signup(form_or_json::<SignupBody>(content_type, body)),
        2 => drop(form_or_json::<LoginBody>(content_type, body)),
        3 => drop(json::<EditBody>(body)),
        4 => drop(json::<PostBody>(body)),
        5 => drop(json::<CreateRoom>(body)),
        6 => drop(json::<AddMember>(body)),
        7 => drop(json::<Rename>(body)),
        8 => drop(json::<CreateHook>(body)),
        9 => drop(json::<HookPost>(body)),
        _ => drop(json::<CreateBot>(body)),
    }
});

//! The query strings, read as the server reads them: the raw query decoded into a map as
//! `warp::query` does (`serde_urlencoded`), then every endpoint's `FromQuery`: history
//! paging, mentions, search, the room list's cursor, the user directory, logout and the
//! WebSocket upgrade.
//!
//! Checks: no panic; every refusal is a `validation_error`; the shared readers keep their
//! word (`positive` is at least 1, `non_negative` at least 0); a room cursor prints as text
//! that parses back to it; a search query's hit ranges lie inside the content, in order, and
//! a query that has terms finds them in its own text.
#![no_main]

use std::collections::HashMap;

use chat_server::auth::LogoutQuery;
use chat_server::error::ApiError;
use chat_server::filters::{FromQuery, Params};
use chat_server::messages::{HistoryQuery, MentionsQuery, SearchQuery};
use chat_server::rooms::RoomsQuery;
use chat_server::search::Query;
use chat_server::store::rooms::RoomCursor;
use chat_server::users::DirectoryQuery;
use chat_server::ws::UpgradeQuery;
use libfuzzer_sys::fuzz_target;

fn read<T: FromQuery>(params: &Params) {
    if let Err(e) = T::from_query(params) {
        assert!(matches!(e, ApiError::Validation(_)), "refused as {e:?}");
    }
}

fn numbers(params: &Params) {
    for name in ["limit", "before", "after", "offset", "since"] {
        if let Ok(Some(n)) = params.positive(name) {
            assert!(n >= 1, "{name}={n}");
        }
        if let Ok(Some(n)) = params.non_negative(name) {
            assert!(n >= 0, "{name}={n}");
        }
    }
}

fn cursor(params: &Params) {
    let Some(text) = params.get("before") else {
        return;
    };
    if let Some(c) = RoomCursor::parse(text) {
        assert_eq!(
            RoomCursor::parse(&c.to_string()),
            Some(c.clone()),
            "{text:?}"
        );
    }
}

fn search(params: &Params) {
    let Some(text) = params.get("q") else { return };
    let Ok(query) = Query::parse(text) else {
        return;
    };
    let _ = query.fts();
    let hits = query.hits(text);
    let chars = text.chars().count();
    for pair in hits.windows(2) {
        assert!(pair[0][0] < pair[1][0], "hits out of order: {hits:?}");
    }
    for [start, end] in &hits {
        assert!(
            start < end && *end <= chars,
            "hit {start}..{end} of {chars}"
        );
    }
    if !query.terms.is_empty() {
        assert!(!hits.is_empty(), "{text:?} does not find its own terms");
    }
}

fuzz_target!(|data: &[u8]| {
    // A request's query is part of its URI: text, or no request at all.
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    // What `warp::query` does; a query it cannot decode is a 400 before any handler.
    let Ok(map) = serde_urlencoded::from_str::<HashMap<String, String>>(raw) else {
        return;
    };
    let params = Params::from(map);
    read::<HistoryQuery>(&params);
    read::<MentionsQuery>(&params);
    read::<SearchQuery>(&params);
    read::<RoomsQuery>(&params);
    read::<DirectoryQuery>(&params);
    read::<LogoutQuery>(&params);
    read::<UpgradeQuery>(&params);
    numbers(&params);
    cursor(&params);
    search(&params);
});

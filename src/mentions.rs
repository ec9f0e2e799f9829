//! `@username` mentions: which names a message's text may mention. The store resolves them
//! against the room's members in the transaction that stores (or edits) the message.

use crate::account::{self, MAX_CHARS, allowed_char};

/// Most distinct names one message can mention.
pub const MAX_MENTIONS: usize = 50;

/// The lookup keys ([`account::key`]) of the names `text` may mention, in order of appearance,
/// without repeats. A mention is `@` at the start or after a character that cannot be part of
/// a name, followed by name characters; trailing `.`, `-` and `_` (the end of a sentence) are
/// also tried without, so "thanks @bob." finds bob.
pub fn candidates(text: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut prev: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let starts = c == '@' && prev.is_none_or(|p| !allowed_char(p));
        prev = Some(c);
        if !starts {
            continue;
        }
        let begin = at + 1;
        let mut end = begin;
        while let Some(&(i, n)) = chars.peek() {
            if !allowed_char(n) {
                break;
            }
            end = i + n.len_utf8();
            prev = Some(n);
            chars.next();
        }
        let mut name = &text[begin..end];
        loop {
            if !name.is_empty() && name.chars().count() <= MAX_CHARS {
                let key = account::key(name);
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            match name.strip_suffix(['.', '-', '_']) {
                Some(shorter) => name = shorter,
                None => break,
            }
        }
        if keys.len() >= MAX_MENTIONS * 2 {
            break;
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_after_an_at_sign_are_candidates_in_order_without_repeats() {
        assert_eq!(candidates("hi @Bob and @alice"), ["bob", "alice"]);
        assert_eq!(candidates("@bob @BOB @bob"), ["bob"]);
        assert_eq!(candidates("thanks @bob."), ["bob.", "bob"]);
        assert_eq!(candidates("(@carol)"), ["carol"]);
        assert!(candidates("mail me at bob@example.com").is_empty());
        assert!(candidates("@ alone, @").is_empty());
        assert_eq!(candidates("@d.e_f-g"), ["d.e_f-g"]);
        assert_eq!(candidates("@Émile!"), ["émile"]);
    }

    #[test]
    fn a_flood_of_names_is_bounded() {
        let text: String = (0..1000).map(|i| format!("@user{i} ")).collect();
        assert!(candidates(&text).len() <= MAX_MENTIONS * 2);
    }
}

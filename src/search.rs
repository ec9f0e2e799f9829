//! Search queries: what a user types, turned into an FTS5 expression that cannot be anything
//! but words, phrases and prefixes (the user's text is never handed to `MATCH` as it is), and
//! the character ranges of a result's content that the query matched.
//!
//! Words are split as SQLite's `unicode61` tokenizer with `remove_diacritics 2` splits them
//! (runs of letters and digits, compared without case and diacritics), so the ranges line up
//! with what the index found.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::error::ApiError;

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 500;
/// Most words, phrases and prefixes in one query.
pub const MAX_TERMS: usize = 16;

/// One part of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// These words in a row (one word for a plain word).
    Phrase(Vec<String>),
    /// A word starting with this.
    Prefix(String),
}

/// A parsed query: every term must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub terms: Vec<Term>,
}

/// The words of `text` as the index sees them: folded (lower case, no diacritics), each with
/// its character range in `text`.
pub fn words(text: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut count = 0;
    for (i, c) in text.chars().enumerate() {
        count = i + 1;
        if c.is_alphanumeric() || is_combining_mark(c) {
            if current.is_empty() {
                start = i;
            }
            current.push(c);
        } else if !current.is_empty() {
            out.push((fold(&current), start, i));
            current.clear();
        }
    }
    if !current.is_empty() {
        out.push((fold(&current), start, count));
    }
    out
}

/// Lower case without diacritics.
fn fold(word: &str) -> String {
    word.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

impl Query {
    /// Reads what a user typed: words, `"quoted phrases"` (an unclosed quote runs to the end)
    /// and `prefix*`. Everything else (operators, column filters, brackets) is only text, and
    /// splits words like any punctuation. Refused: empty, too long, NUL, too many terms. Text
    /// without a word in it (`"***"`) is a query that finds nothing.
    pub fn parse(text: &str) -> Result<Query, ApiError> {
        let bad = |why: &str| ApiError::validation("q", why);
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(bad(&format!(
                "must be at most {MAX_QUERY_CHARS} characters"
            )));
        }
        if text.is_empty() {
            return Err(bad("must not be empty"));
        }
        if text.contains('\0') {
            return Err(bad("must not contain NUL"));
        }
        let mut terms = Vec::new();
        for (i, part) in text.split('"').enumerate() {
            if i % 2 == 1 {
                // Inside quotes: one phrase.
                let phrase: Vec<String> = words(part).into_iter().map(|(w, _, _)| w).collect();
                if !phrase.is_empty() {
                    terms.push(Term::Phrase(phrase));
                }
                continue;
            }
            for chunk in part.split_whitespace() {
                let prefix = chunk.ends_with('*');
                let found = words(chunk);
                let last = found.len().saturating_sub(1);
                for (k, (word, _, _)) in found.into_iter().enumerate() {
                    if prefix && k == last {
                        terms.push(Term::Prefix(word));
                    } else {
                        terms.push(Term::Phrase(vec![word]));
                    }
                }
            }
        }
        if terms.len() > MAX_TERMS {
            return Err(bad(&format!("must have at most {MAX_TERMS} words")));
        }
        Ok(Query { terms })
    }

    /// The FTS5 expression: each term a quoted string (words only, so nothing in it is
    /// syntax), prefixes marked `*`, all of them required.
    pub fn fts(&self) -> String {
        self.terms
            .iter()
            .map(|t| match t {
                Term::Phrase(words) => format!("\"{}\"", words.join(" ")),
                Term::Prefix(word) => format!("\"{word}\"*"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The character ranges (`[start, end)`) of `content` that the terms match, in order.
    pub fn hits(&self, content: &str) -> Vec<[usize; 2]> {
        let found = words(content);
        let mut hits = Vec::new();
        for (i, (word, start, _)) in found.iter().enumerate() {
            for term in &self.terms {
                let end = match term {
                    Term::Prefix(p) if word.starts_with(p.as_str()) => Some(found[i].2),
                    Term::Phrase(phrase) => {
                        let matches = phrase.len() <= found.len() - i
                            && phrase.iter().zip(&found[i..]).all(|(p, (w, _, _))| p == w);
                        matches.then(|| found[i + phrase.len() - 1].2)
                    }
                    Term::Prefix(_) => None,
                };
                if let Some(end) = end {
                    hits.push([*start, end]);
                    break;
                }
            }
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_phrases_and_prefixes_become_quoted_terms() {
        let q = Query::parse(r#"Café "big deal" deplo* x"#).unwrap();
        assert_eq!(q.fts(), r#""cafe" "big deal" "deplo"* "x""#);
    }

    #[test]
    fn hostile_text_is_only_words() {
        for (text, fts) in [
            (r#"a" OR b"#, r#""a" "or b""#),
            ("NEAR(a b)", r#""near" "a" "b""#),
            ("content:secret", r#""content" "secret""#),
            ("OR OR", r#""or" "or""#),
            ("*a*", r#""a"*"#),
            ("-x ^y", r#""x" "y""#),
        ] {
            assert_eq!(Query::parse(text).unwrap().fts(), fts, "{text}");
        }
        for text in ["", "a\0b"] {
            assert!(Query::parse(text).is_err(), "{text:?}");
        }
        for text in ["   ", "\"", "***", "\"\"", "—"] {
            assert!(Query::parse(text).unwrap().terms.is_empty(), "{text:?}");
        }
        assert!(Query::parse(&"a".repeat(10_000)).is_err());
        assert!(Query::parse(&"a ".repeat(17)).is_err());
    }

    #[test]
    fn hits_are_character_ranges_of_the_matching_words() {
        let q = Query::parse(r#"déjà "big deal" ship*"#).unwrap();
        let content = "Déjà vu: a BIG deal, shipping today — not a big one";
        let hits = q.hits(content);
        let shown: Vec<String> = hits
            .iter()
            .map(|[a, b]| content.chars().skip(*a).take(b - a).collect())
            .collect();
        assert_eq!(shown, ["Déjà", "BIG deal", "shipping"]);
    }
}

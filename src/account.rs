//! The rules an account must meet: its password policy, and what a username is, with the two
//! comparison forms that keep one person's name from being taken again in another spelling.
//!
//! - The stored name is the NFKC form of what was typed: fullwidth `ｖｉｃｔｉｍ`, mathematical
//!   bold `𝐯𝐢𝐜𝐭𝐢𝐦`, the ligature `ﬁle` and the numeral `Ⅳ` become `victim`, `file`, `IV`.
//! - The *key* is that name case-folded (full Unicode case folding, then NFKC again), so `ΣΣ`,
//!   `σσ` and `σς` are one name. Keys are unique; login looks accounts up by key.
//! - The *skeleton* is the UTS #39 confusable skeleton of the key, folded once more, so a name
//!   that merely looks like an existing one (Cyrillic `асе` beside Latin `ace`, `b0b` beside
//!   `bob`) is refused as taken.
//! - A name must be single-script (UTS #39 mixed-script detection): Latin with one Cyrillic
//!   letter is refused outright.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_security::{GeneralSecurityProfile, MixedScript, skeleton};

/// Longest username an account can have, in characters of its normalised form.
pub const MAX_CHARS: usize = 150;

/// Punctuation a username may contain besides letters and digits.
const PUNCTUATION: &str = "@.+-_";

/// A username that meets the rules, with its comparison forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    /// The name as stored and shown: NFKC of the input.
    pub display: String,
    /// The unique lookup form: case-folded NFKC.
    pub key: String,
    /// The look-alike form: the confusable skeleton of the key, case-folded.
    pub skeleton: String,
}

/// Why a username was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Length,
    Characters,
    MixedScript,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::Length => "must be 1 to 150 characters",
            Invalid::Characters => "may contain only letters, digits and @ . + - _",
            Invalid::MixedScript => "must not mix letters of different scripts",
        })
    }
}

impl Username {
    /// Normalises `input` and checks it against the rules.
    pub fn parse(input: &str) -> Result<Username, Invalid> {
        // NFKC at most multiplies the length by 18; a longer input cannot become short enough.
        if input.is_empty() || input.chars().count() > MAX_CHARS * 18 {
            return Err(Invalid::Length);
        }
        let display: String = input.nfkc().collect();
        let len = display.chars().count();
        if len == 0 || len > MAX_CHARS {
            return Err(Invalid::Length);
        }
        if !display.chars().all(allowed_char) {
            return Err(Invalid::Characters);
        }
        if !display.as_str().is_single_script() {
            return Err(Invalid::MixedScript);
        }
        let key = key(&display);
        let skeleton = skeleton_of(&key);
        Ok(Username {
            display,
            key,
            skeleton,
        })
    }
}

pub(crate) fn allowed_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || PUNCTUATION.contains(c);
    }
    // Letters and digits of the scripts in everyday use (UTS #39 "Allowed"), which leaves out
    // obsolete and technical letters and the invisible characters.
    c.is_alphanumeric() && c.identifier_allowed()
}

/// The unique lookup form of a name as typed: NFKC, full case folding, NFKC again. Login and
/// the admin commands look accounts up by it.
pub fn key(name: &str) -> String {
    let folded = caseless::default_case_fold_str(&name.nfkc().collect::<String>());
    folded.nfkc().collect()
}

/// The look-alike form of a key.
pub fn skeleton_of(key: &str) -> String {
    let skeleton: String = skeleton(key).collect();
    caseless::default_case_fold_str(&skeleton).nfkc().collect()
}

/// What is wrong with `password` as the password of the account `username`, if anything.
pub fn password_problem(username: &str, password: &str) -> Option<&'static str> {
    if password.chars().count() < 8 {
        Some("must be at least 8 characters")
    } else if password.chars().all(|c| c.is_ascii_digit()) {
        Some("must not be entirely numeric")
    } else if key(password) == key(username) {
        Some("must not be the username")
    } else if password.len() > 1024 {
        Some("must be at most 1024 bytes")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Username {
        Username::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn ascii_names_keep_their_spelling_and_fold_to_lower_case() {
        let u = parse("Al.ice+1@x_y-z");
        assert_eq!(u.display, "Al.ice+1@x_y-z");
        assert_eq!(u.key, "al.ice+1@x_y-z");
    }

    #[test]
    fn case_folding_is_full_unicode_folding() {
        assert_eq!(parse("ΣΣ").key, parse("σσ").key);
        assert_eq!(parse("σς").key, parse("σσ").key);
        assert_eq!(parse("STRASSE").key, parse("straße").key);
    }

    #[test]
    fn compatibility_forms_normalise_to_the_plain_name() {
        for (typed, shown) in [
            ("ｖｉｃｔｉｍ", "victim"),
            ("𝐯𝐢𝐜𝐭𝐢𝐦", "victim"),
            ("ﬁle", "file"),
            ("Ⅳ", "IV"),
        ] {
            let u = parse(typed);
            assert_eq!(u.display, shown, "{typed}");
            assert_eq!(u.key, shown.to_lowercase(), "{typed}");
        }
    }

    #[test]
    fn mixed_scripts_are_refused_and_single_scripts_allowed() {
        // Latin with a Cyrillic і
        assert_eq!(Username::parse("vіctim"), Err(Invalid::MixedScript));
        for ok in [
            "виктор",
            "δημήτρης",
            "山田たろう",
            "김철수",
            "محمد",
            "maria_2",
        ] {
            parse(ok);
        }
    }

    #[test]
    fn look_alikes_share_a_skeleton() {
        // all-Cyrillic асе beside Latin ace
        assert_eq!(parse("асе").skeleton, parse("ace").skeleton);
        assert_eq!(parse("b0b").skeleton, parse("bob").skeleton);
        assert_eq!(parse("BOB").skeleton, parse("bob").skeleton);
        assert_ne!(parse("alice").skeleton, parse("alicia").skeleton);
    }

    #[test]
    fn the_password_policy() {
        assert_eq!(
            password_problem("bob", "short"),
            Some("must be at least 8 characters")
        );
        assert_eq!(
            password_problem("bob", "12345678"),
            Some("must not be entirely numeric")
        );
        assert_eq!(
            password_problem("ΣΣΣΣΣΣΣΣ", "σσσσσσσς"),
            Some("must not be the username")
        );
        assert_eq!(
            password_problem("bob", &"x".repeat(1025)),
            Some("must be at most 1024 bytes")
        );
        assert_eq!(password_problem("bob", "builder-4242"), None);
    }

    #[test]
    fn invalid_names_say_why() {
        assert_eq!(Username::parse(""), Err(Invalid::Length));
        assert_eq!(Username::parse(&"a".repeat(151)), Err(Invalid::Length));
        assert!(Username::parse(&"a".repeat(150)).is_ok());
        // one character whose NFKC form is 18 characters long
        assert_eq!(Username::parse(&"\u{FDFA}".repeat(9)), Err(Invalid::Length));
        for bad in ["bad name!", "zero\u{200B}width", "tab\t", "a/b", "½"] {
            assert_eq!(Username::parse(bad), Err(Invalid::Characters), "{bad:?}");
        }
    }
}

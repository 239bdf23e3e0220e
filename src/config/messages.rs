//! The operator's announcement per language: `room.message` (one text for
//! both languages, as before) and `room.messages = { ko = "…", en = "…" }`
//! (a language given there wins over `room.message`).

use serde::{Deserialize, Serialize};

use super::validate::Problems;

/// Longest announcement per language, in characters: a few sentences fit,
/// and every waiting visitor's poll carries both texts.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// Raw `room.messages`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessages {
    /// The Korean text (default: `room.message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ko: Option<String>,
    /// The English text (default: `room.message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
}

/// The announcement in both languages (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Messages {
    /// Korean.
    #[serde(default)]
    pub ko: String,
    /// English.
    #[serde(default)]
    pub en: String,
}

impl Messages {
    /// The same text in both languages.
    pub fn both(text: &str) -> Messages {
        Messages {
            ko: text.to_owned(),
            en: text.to_owned(),
        }
    }

    /// The text for English (`true`) or Korean readers.
    pub fn text(&self, english: bool) -> &str {
        if english {
            &self.en
        } else {
            &self.ko
        }
    }

    /// Control characters (other than line breaks, which become spaces)
    /// removed and surrounding space trimmed: what is stored and shown.
    pub fn cleaned(&self) -> Messages {
        Messages {
            ko: clean(&self.ko),
            en: clean(&self.en),
        }
    }

    /// Why these texts cannot be shown, if they cannot (too long).
    pub fn check(&self) -> Result<(), String> {
        for (lang, text) in [("ko", &self.ko), ("en", &self.en)] {
            let n = text.chars().count();
            if n > MAX_MESSAGE_CHARS {
                return Err(format!(
                    "the {lang} message has {n} characters; at most {MAX_MESSAGE_CHARS} are shown"
                ));
            }
        }
        Ok(())
    }
}

/// Removes control characters (tabs and line breaks become spaces) and
/// trims: an announcement is one paragraph of plain text.
pub fn clean(text: &str) -> String {
    let spaced: String = text
        .chars()
        .filter_map(|c| match c {
            '\t' | '\n' | '\r' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    spaced.trim().to_owned()
}

/// The validated announcement of `[room]`.
pub(super) fn messages(message: &str, raw: Option<&RawMessages>, p: &mut Problems) -> Messages {
    let pick = |given: Option<&String>| given.map_or(message, String::as_str).to_owned();
    let m = Messages {
        ko: pick(raw.and_then(|r| r.ko.as_ref())),
        en: pick(raw.and_then(|r| r.en.as_ref())),
    }
    .cleaned();
    for (lang, text, given) in [
        ("ko", &m.ko, raw.and_then(|r| r.ko.as_ref()).is_some()),
        ("en", &m.en, raw.and_then(|r| r.en.as_ref()).is_some()),
    ] {
        let n = text.chars().count();
        if n > MAX_MESSAGE_CHARS {
            // Named where it was written, so the problem points at its line.
            let key = if given {
                format!("room.messages.{lang}")
            } else {
                "room.message".to_string()
            };
            p.push(
                key,
                format!("{n} characters; at most {MAX_MESSAGE_CHARS} are shown"),
            );
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_language_in_messages_wins_over_message() {
        let mut p = Problems(Vec::new());
        let raw = RawMessages {
            ko: None,
            en: Some("Doors at 10".into()),
        };
        let m = messages("문 열림 10시", Some(&raw), &mut p);
        assert_eq!(m.ko, "문 열림 10시");
        assert_eq!(m.en, "Doors at 10");
        assert_eq!(messages("x", None, &mut p), Messages::both("x"));
        assert!(p.0.is_empty());
    }

    #[test]
    fn controls_are_removed_and_long_texts_refused() {
        let mut p = Problems(Vec::new());
        let m = messages("a\u{1b}[31mb\nc\u{0}", None, &mut p);
        assert_eq!(m.ko, "a[31mb c");
        messages(&"x".repeat(MAX_MESSAGE_CHARS + 1), None, &mut p);
        assert_eq!(p.0.len(), 2, "both languages come from room.message");
        assert!(p.0.iter().all(|(k, _)| k == "room.message"));
        let raw = RawMessages {
            ko: None,
            en: Some("y".repeat(MAX_MESSAGE_CHARS + 1)),
        };
        let mut p = Problems::default();
        messages("short", Some(&raw), &mut p);
        assert_eq!(p.0.len(), 1);
        assert_eq!(p.0[0].0, "room.messages.en");
    }
}

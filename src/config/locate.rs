//! Finds where a key stands in the config file, so every mistake is reported
//! with its file and line (`usher.toml:12: origin.url: ...`), also the
//! mistakes found later, when the files the config names are opened.

use std::collections::BTreeMap;
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use super::Problem;

/// One-based line number of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Where every key of one config file stands: the file's name and the line
/// of each dotted key path (`server.tls.certificates.1.cert`, array items
/// by index).
#[derive(Debug, Clone, Default)]
pub struct Places {
    file: String,
    lines: Arc<BTreeMap<String, usize>>,
}

impl Places {
    /// The places of every key in `doc`, parsed from `text` read from `file`.
    pub fn new(file: &str, doc: &DeTable<'_>, text: &str) -> Places {
        let mut lines = BTreeMap::new();
        walk_table(doc, "", text, &mut lines);
        Places {
            file: file.to_string(),
            lines: Arc::new(lines),
        }
    }

    /// The file's name as given.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The line of `key`, or of the deepest part of its path in the file
    /// (a default that is not written stands under its section).
    pub fn line(&self, key: &str) -> Option<usize> {
        let mut path = key;
        loop {
            if let Some(l) = self.lines.get(path) {
                return Some(*l);
            }
            path = &path[..path.rfind('.')?];
        }
    }

    /// A mistake at `key`, placed in the file.
    pub fn problem(&self, key: &str, message: impl Into<String>) -> Problem {
        Problem {
            file: self.file.clone(),
            line: self.line(key),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

fn walk_table(t: &DeTable<'_>, prefix: &str, text: &str, out: &mut BTreeMap<String, usize>) {
    for (k, v) in t.iter() {
        let path = join(prefix, k.get_ref());
        out.insert(path.clone(), line_of(text, k.span().start));
        walk_value(v.get_ref(), &path, text, out);
    }
}

fn walk_value(v: &DeValue<'_>, path: &str, text: &str, out: &mut BTreeMap<String, usize>) {
    match v {
        DeValue::Table(t) => walk_table(t, path, text, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}.{i}");
                out.insert(p.clone(), line_of(text, item.span().start));
                walk_value(item.get_ref(), &p, text, out);
            }
        }
        _ => {}
    }
}

/// `prefix.key`, or `key` at the top.
pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_array_items() {
        let text = "[server]\nlisten = [\"a\"]\n\n[[server.tls.certificates]]\ncert = \"x\"\n\n[[server.tls.certificates]]\ncert = \"y\"\n";
        let doc = DeTable::parse(text).unwrap();
        let places = Places::new("f.toml", doc.get_ref(), text);
        let at = |p: &str| places.line(p);
        assert_eq!(at("server.listen"), Some(2));
        assert_eq!(at("server.tls.certificates.1.cert"), Some(8));
        assert_eq!(at("server.tls.certificates.0.cert"), Some(5));
        assert_eq!(at("server.tls.certificates.1.key"), Some(7));
        assert_eq!(at("server.nope"), Some(1));
        assert_eq!(at("nothing"), None);
        let p = places.problem("server.listen.0", "bad");
        assert_eq!(p.to_string(), "f.toml:2: server.listen.0: bad");
    }
}

//! Finds where a key stands in the config file, so every mistake is reported
//! with its file and line (`usher.toml:12: origin.url: ...`).

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One-based line number of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Byte offset of the key at `path` (e.g. `server.tls.certificates.1.cert`,
/// array items by index), or of the deepest part of the path that exists.
pub fn offset_of(root: &Spanned<DeTable<'_>>, path: &str) -> Option<usize> {
    let mut found = None;
    let mut value: Option<&DeValue<'_>> = None;
    for part in path.split('.') {
        let next = match value {
            None => entry(root.get_ref(), part, &mut found),
            Some(DeValue::Table(t)) => entry(t, part, &mut found),
            Some(DeValue::Array(items)) => part
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .inspect(|v| {
                    found = Some(v.span().start);
                }),
            Some(_) => None,
        };
        match next {
            Some(v) => value = Some(v.get_ref()),
            None => break,
        }
    }
    found
}

fn entry<'a, 'i>(
    table: &'a DeTable<'i>,
    key: &str,
    found: &mut Option<usize>,
) -> Option<&'a Spanned<DeValue<'i>>> {
    let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == key)?;
    *found = Some(k.span().start);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_array_items() {
        let text = "[server]\nlisten = [\"a\"]\n\n[[server.tls.certificates]]\ncert = \"x\"\n\n[[server.tls.certificates]]\ncert = \"y\"\n";
        let doc = DeTable::parse(text).unwrap();
        let at = |p: &str| offset_of(&doc, p).map(|o| line_of(text, o));
        assert_eq!(at("server.listen"), Some(2));
        assert_eq!(at("server.tls.certificates.1.cert"), Some(8));
        assert_eq!(at("server.tls.certificates.0.cert"), Some(5));
        assert_eq!(at("server.nope"), Some(1));
        assert_eq!(at("nothing"), None);
    }
}

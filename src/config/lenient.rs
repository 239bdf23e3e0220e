//! Reads a section of the file leniently: a key that cannot be read (an
//! unknown key, a value of the wrong type) is reported with its line and
//! left out, and the rest of the section is read again, so one mistake
//! never hides the next one (the section's other keys are still validated).

use serde::de::DeserializeOwned;
use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

use super::locate::{join, line_of};
use super::Problem;

/// Rounds of "drop the bad key, read again" at most: far more mistakes
/// than anyone makes in one section, and a bound on the work.
const MAX_ROUNDS: usize = 64;

/// What reading a section found.
pub(super) struct Read<T> {
    /// The section, defaults where keys were missing or left out.
    pub value: T,
    /// The mistakes, each with the key path it was found at.
    pub problems: Vec<Problem>,
    /// Key paths that were left out (their validation would be noise).
    pub skipped: Vec<String>,
}

/// Deserializes `value` (the section at `path`) as `T`, leaving out every
/// key that fails and recording why.
pub(super) fn read<T: DeserializeOwned + Default>(
    mut value: Spanned<DeValue<'_>>,
    path: &str,
    text: &str,
    file: &str,
) -> Read<T> {
    let mut out = Read {
        value: T::default(),
        problems: Vec::new(),
        skipped: Vec::new(),
    };
    let section_start = value.span().start;
    for _ in 0..MAX_ROUNDS {
        let err = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => {
                out.value = v;
                return out;
            }
            Err(e) => e,
        };
        let at = err.span().map(|s| s.start);
        let dropped = at.and_then(|o| match drop_at(&mut value, o, path) {
            Found::Dropped(p) => Some(p),
            Found::Here | Found::No => None,
        });
        let key = dropped.clone().unwrap_or_else(|| path.to_string());
        out.problems.push(Problem {
            file: file.to_string(),
            line: Some(line_of(text, at.unwrap_or(section_start))),
            key: key.clone(),
            message: err.message().to_string(),
        });
        out.skipped.push(key);
        if dropped.is_none() {
            // The section as a whole is wrong (not a table, say): its defaults.
            return out;
        }
    }
    out
}

enum Found {
    /// An entry below was removed; its key path.
    Dropped(String),
    /// The offset is in this value but in none of its entries.
    Here,
    /// The offset is not in this value.
    No,
}

/// Removes the deepest table entry whose key or value holds byte `offset`.
/// An item of an array of tables goes as a whole when none of its keys
/// holds the offset; a scalar item takes its whole array with it (dropping
/// one address of a list would change what the list means).
fn drop_at(value: &mut Spanned<DeValue<'_>>, offset: usize, path: &str) -> Found {
    let span = value.span();
    match value.get_mut() {
        DeValue::Table(t) => {
            let mut hit = None;
            for (k, v) in t.iter_mut() {
                if !k.span().contains(&offset) && !holds(v, offset) {
                    continue;
                }
                let p = join(path, k.get_ref());
                match drop_at(v, offset, &p) {
                    Found::Dropped(deeper) => return Found::Dropped(deeper),
                    Found::Here | Found::No => {
                        hit = Some((k.get_ref().to_string(), p));
                        break;
                    }
                }
            }
            match hit {
                Some((key, p)) => {
                    t.remove(key.as_str());
                    Found::Dropped(p)
                }
                None if span.contains(&offset) => Found::Here,
                None => Found::No,
            }
        }
        DeValue::Array(items) => {
            for i in 0..items.len() {
                if !holds(&items[i], offset) {
                    continue;
                }
                let p = format!("{path}.{i}");
                let is_table = matches!(items[i].get_ref(), DeValue::Table(_));
                let item: &mut Spanned<DeValue<'_>> = &mut items.as_mut()[i];
                return match drop_at(item, offset, &p) {
                    Found::Dropped(deeper) => Found::Dropped(deeper),
                    Found::Here | Found::No if is_table => {
                        let all = std::mem::replace(items, toml::de::DeArray::new());
                        for (j, item) in all.into_iter().enumerate() {
                            if j != i {
                                items.push(item);
                            }
                        }
                        Found::Dropped(p)
                    }
                    Found::Here | Found::No => Found::Here,
                };
            }
            if span.contains(&offset) {
                Found::Here
            } else {
                Found::No
            }
        }
        _ if span.contains(&offset) => Found::Here,
        _ => Found::No,
    }
}

/// Whether `value` holds byte `offset`: its own span, or (a table's own
/// span being only its header) any key or value nested in it.
fn holds(value: &Spanned<DeValue<'_>>, offset: usize) -> bool {
    if value.span().contains(&offset) {
        return true;
    }
    match value.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .any(|(k, v)| k.span().contains(&offset) || holds(v, offset)),
        DeValue::Array(items) => items.iter().any(|v| holds(v, offset)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use toml::de::DeTable;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        name: String,
        count: u32,
        list: Vec<String>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        x: u32,
    }

    fn read_s(text: &str) -> Read<Section> {
        let doc = DeTable::parse(text).unwrap();
        let (_, v) = doc.get_ref().iter().next().unwrap();
        read(v.clone(), "s", text, "f.toml")
    }

    #[test]
    fn every_bad_key_is_reported_and_the_rest_is_read() {
        let r = read_s(
            "[s]\nname = \"kept\"\ncolour = 1\ncount = \"many\"\nlist = [1]\n[s.inner]\nx = 1\ny = 2\n",
        );
        let got: Vec<(Option<usize>, &str)> = r
            .problems
            .iter()
            .map(|p| (p.line, p.key.as_str()))
            .collect();
        let mut want = vec![
            (Some(3), "s.colour"),
            (Some(4), "s.count"),
            (Some(5), "s.list"),
            (Some(8), "s.inner.y"),
        ];
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(got_sorted, want, "{:?}", r.problems);
        assert_eq!(
            r.value,
            Section {
                name: "kept".into(),
                count: 0,
                list: vec![],
                inner: Some(Inner { x: 1 })
            }
        );
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct WithItems {
        items: Vec<Inner>,
    }

    #[test]
    fn a_bad_item_of_an_array_of_tables_is_left_out_alone() {
        let text = "[[s.items]]\nx = 1\n[[s.items]]\nx = 2\nz = 3\n[[s.items]]\ny = 4\n";
        let doc = DeTable::parse(text).unwrap();
        let (_, v) = doc.get_ref().iter().next().unwrap();
        let r: Read<WithItems> = read(v.clone(), "s", text, "f.toml");
        let mut got: Vec<(Option<usize>, String)> =
            r.problems.iter().map(|p| (p.line, p.key.clone())).collect();
        got.sort();
        assert_eq!(
            got,
            [
                (Some(5), "s.items.1.z".to_string()),
                // the item's header: `x` is missing from it
                (Some(6), "s.items.2".to_string()),
                (Some(7), "s.items.2.y".to_string()),
            ],
            "{:?}",
            r.problems
        );
        // the third item, without its required `x`, goes as a whole
        assert_eq!(r.value.items, [Inner { x: 1 }, Inner { x: 2 }]);
    }

    #[test]
    fn a_section_that_is_not_a_table_is_one_problem() {
        let text = "s = 5\n";
        let r = read_s(text);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].key, "s");
        assert_eq!(r.value, Section::default());
    }
}

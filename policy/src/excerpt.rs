//! Cutting untrusted or unbounded text (a parser's stderr, a serde error quoting its input, a
//! JSON value) before it goes into an error, a log line or a decision record.

use std::borrow::Cow;

/// The most of any one untrusted value (an annotation, a label, an image name, an error that
/// quotes one) that ociguard copies into its logs, records and events. A 50 MB annotation must
/// not become a 50 MB log line.
pub const MAX_VALUE: usize = 4096;
/// The most entries of an untrusted map (labels, annotations) copied whole; the rest are
/// summarised by one entry under [`MORE_KEY`].
pub const MAX_ENTRIES: usize = 64;
/// The key of the entry that says how many entries of a map were left out.
pub const MORE_KEY: &str = "...";

/// [`excerpt`] at [`MAX_VALUE`].
pub fn bounded(text: &str) -> Cow<'_, str> {
    excerpt(text, MAX_VALUE)
}

/// Cut `text` in place to [`excerpt`] of `max` bytes (no copy when it fits).
pub fn bound_in_place(text: &mut String, max: usize) {
    if text.len() > max {
        *text = excerpt(text, max).into_owned();
    }
}

/// The entries of an untrusted map as they may be copied: at most [`MAX_ENTRIES`], keys cut
/// at 256 bytes and values at `max_value`, then one `"..."` entry saying how many were left out.
pub fn bounded_entries<'a, I>(
    entries: I,
    max_value: usize,
) -> impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)>
where
    I: ExactSizeIterator<Item = (&'a str, &'a str)>,
{
    let total = entries.len();
    let more = total.saturating_sub(MAX_ENTRIES);
    entries
        .take(MAX_ENTRIES)
        .map(move |(k, v)| (excerpt(k, 256), excerpt(v, max_value)))
        .chain((more > 0).then(|| {
            (
                Cow::Borrowed(MORE_KEY),
                Cow::Owned(format!("{more} more of {total} entries left out")),
            )
        }))
}

/// `text` if it has at most `max` bytes; otherwise its first `max` bytes (at a character
/// boundary) followed by `... (N bytes)`.
pub fn excerpt(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let cut = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    Cow::Owned(format!("{}... ({} bytes)", &text[..cut], text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_a_character_boundary() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("abcdef", 3), "abc... (6 bytes)");
        // 'é' is two bytes: a cut inside it moves back.
        assert_eq!(excerpt("aé", 2), "a... (3 bytes)");
        assert_eq!(excerpt("éé", 1), "... (4 bytes)");
        let mut s = "x".repeat(MAX_VALUE + 10);
        bound_in_place(&mut s, MAX_VALUE);
        assert!(
            s.ends_with(&format!("... ({} bytes)", MAX_VALUE + 10)),
            "{s}"
        );
        assert!(s.len() < MAX_VALUE + 32);
    }

    #[test]
    fn maps_are_bounded_in_entries_keys_and_values() {
        let big = "v".repeat(50 << 20);
        let map: std::collections::BTreeMap<String, String> = (0..MAX_ENTRIES + 5)
            .map(|i| {
                (
                    format!("k{i:03}"),
                    if i == 0 { big.clone() } else { "v".into() },
                )
            })
            .collect();
        let out: Vec<_> =
            bounded_entries(map.iter().map(|(k, v)| (k.as_str(), v.as_str())), 100).collect();
        assert_eq!(out.len(), MAX_ENTRIES + 1);
        assert!(out[0].1.len() < 130 && out[0].1.ends_with(&format!("({} bytes)", 50 << 20)));
        assert_eq!(out[MAX_ENTRIES].0, MORE_KEY);
        assert_eq!(out[MAX_ENTRIES].1, "5 more of 69 entries left out");
        let small: Vec<_> = bounded_entries([("a", "b")].into_iter(), 100).collect();
        assert_eq!(small, vec![(Cow::Borrowed("a"), Cow::Borrowed("b"))]);
    }
}

//! Cutting untrusted or unbounded text (a parser's stderr, a serde error quoting its input, a
//! JSON value) before it goes into an error, a log line or a decision record.

use std::borrow::Cow;

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
    }
}

//! Text kept within a byte budget: cut on a character boundary, so a long log line or
//! message from a handler or a worker is stored whole up to the limit and never split
//! inside a character.

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn cuts_on_a_character_boundary() {
        assert_eq!(super::truncated("héllo".into(), 2), "h");
        assert_eq!(super::truncated("héllo".into(), 3), "hé");
        assert_eq!(super::truncated("hi".into(), 10), "hi");
    }
}

//! Streaming detokenization: tokens arrive one at a time and a multi-byte
//! character may be split across them; only complete UTF-8 is emitted.

use super::Tokenizer;

/// Turns a stream of byte chunks into complete UTF-8 text. Bytes that can
/// never start or continue a valid character become U+FFFD at once; an
/// incomplete trailing character waits for the next chunk (or [`Utf8Stream::flush`]).
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes`; returns the text that is now complete.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }

    /// Whether an incomplete character is waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: an incomplete trailing character becomes U+FFFD.
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Detokenizes generated tokens one at a time (each token's
/// [`Tokenizer::token_to_piece`]), emitting only complete UTF-8.
#[derive(Debug, Clone)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    special: bool,
    utf8: Utf8Stream,
}

impl<'t> StreamDecoder<'t> {
    /// A decoder over `tokenizer`; `special` renders control tokens as their text.
    pub fn new(tokenizer: &'t Tokenizer, special: bool) -> Self {
        StreamDecoder { tokenizer, special, utf8: Utf8Stream::new() }
    }

    /// Adds one token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let piece = self.tokenizer.token_to_piece(id, self.special);
        self.utf8.push_bytes(&piece)
    }

    /// Ends the stream, returning any incomplete character as U+FFFD.
    pub fn flush(&mut self) -> String {
        self.utf8.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_wait_for_their_end() {
        let mut s = Utf8Stream::new();
        let bytes = "a€😀".as_bytes();
        assert_eq!(s.push_bytes(&bytes[..2]), "a");
        assert_eq!(s.push_bytes(&bytes[2..4]), "€");
        assert_eq!(s.push_bytes(&bytes[4..6]), "");
        assert!(s.has_pending());
        assert_eq!(s.push_bytes(&bytes[6..]), "😀");
        assert_eq!(s.flush(), "");
    }

    #[test]
    fn invalid_bytes_are_replaced() {
        let mut s = Utf8Stream::new();
        assert_eq!(s.push_bytes(b"x\xFFy"), "x\u{FFFD}y");
        assert_eq!(s.push_bytes(b"\xE2\x82"), "");
        assert_eq!(s.flush(), "\u{FFFD}");
        assert_eq!(s.push_bytes(b"\xE2\x82z"), "\u{FFFD}z");
    }
}

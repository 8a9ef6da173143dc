//! Unicode character classes as llama.cpp's pre-tokenizers see them.
//!
//! llama.cpp classifies code points with its own tables, generated from the
//! Unicode 15.1 character database: a code point assigned after 15.1 counts as
//! *undefined* there (neither letter, number, punctuation, symbol nor mark).
//! We derive the same classes from `regex-syntax`'s Unicode tables, restricted
//! to the characters whose Unicode age is at most 15.1, so that text in scripts
//! added later splits exactly as llama.cpp splits it. Whitespace is Unicode's
//! `White_Space` property (25 code points), as in llama.cpp.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// General category `L*`.
pub(crate) const LETTER: u8 = 1 << 0;
/// General category `N*`.
pub(crate) const NUMBER: u8 = 1 << 1;
/// General category `P*`.
pub(crate) const PUNCTUATION: u8 = 1 << 2;
/// General category `S*`.
pub(crate) const SYMBOL: u8 = 1 << 3;
/// General category `M*`.
pub(crate) const MARK: u8 = 1 << 4;
/// The `White_Space` property.
pub(crate) const WHITESPACE: u8 = 1 << 5;
/// Set for every code point: distinguishes "a character of another class"
/// from "past the end of the fragment" (flags 0) in the splitters.
pub(crate) const ANY: u8 = 1 << 7;

/// The Unicode version of llama.cpp's tables.
const UNICODE_AGE: &str = "15.1";

/// Number of Unicode scalar values' slots (code points 0..=0x10FFFF).
const N_CODEPOINTS: usize = 0x11_0000;

/// The class bits of `c` (always includes [`ANY`]).
#[inline]
pub(crate) fn flags(c: char) -> u8 {
    table()[c as usize]
}

/// One byte of class bits per code point, built on first use (about 1 MiB).
fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(build_table)
}

fn build_table() -> Vec<u8> {
    let mut t = vec![ANY; N_CODEPOINTS];
    for (class, bit) in [("L", LETTER), ("N", NUMBER), ("P", PUNCTUATION), ("S", SYMBOL), ("M", MARK)] {
        let pattern = format!(r"[\p{{{class}}}&&\p{{age:{UNICODE_AGE}}}]");
        for (lo, hi) in class_ranges(&pattern) {
            for slot in &mut t[lo as usize..=hi as usize] {
                *slot |= bit;
            }
        }
    }
    for (cp, slot) in t.iter_mut().enumerate() {
        if char::from_u32(cp as u32).is_some_and(char::is_whitespace) {
            *slot |= WHITESPACE;
        }
    }
    t
}

/// The code point ranges of a character-class pattern. The patterns are fixed
/// in this file, so a parse failure is a programming error caught by the unit
/// tests; it degrades to an empty class rather than a panic.
fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    let Ok(hir) = regex_syntax::ParserBuilder::new().build().parse(pattern) else {
        return Vec::new();
    };
    match hir.kind() {
        HirKind::Class(Class::Unicode(cls)) => {
            cls.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_classes() {
        assert_eq!(flags('a'), ANY | LETTER);
        assert_eq!(flags('Z'), ANY | LETTER);
        assert_eq!(flags('7'), ANY | NUMBER);
        assert_eq!(flags(' '), ANY | WHITESPACE);
        assert_eq!(flags('\n'), ANY | WHITESPACE);
        assert_eq!(flags('!'), ANY | PUNCTUATION);
        assert_eq!(flags('$'), ANY | SYMBOL);
        assert_eq!(flags('`'), ANY | SYMBOL);
        assert_eq!(flags('\0'), ANY);
    }

    #[test]
    fn non_ascii_classes() {
        assert_eq!(flags('é'), ANY | LETTER);
        assert_eq!(flags('中'), ANY | LETTER);
        assert_eq!(flags('٣'), ANY | NUMBER);
        assert_eq!(flags('²'), ANY | NUMBER);
        assert_eq!(flags('\u{0301}'), ANY | MARK);
        assert_eq!(flags('\u{3000}'), ANY | WHITESPACE);
        assert_eq!(flags('\u{00A0}'), ANY | WHITESPACE);
        assert_eq!(flags('\u{0085}'), ANY | WHITESPACE);
        assert_eq!(flags('\u{200B}'), ANY);
        assert_eq!(flags('😀'), ANY | SYMBOL);
        assert_eq!(flags('。'), ANY | PUNCTUATION);
    }

    #[test]
    fn unicode_version_is_15_1() {
        // CJK Extension I (Unicode 15.1) is a letter ...
        assert_eq!(flags('\u{2EBF0}'), ANY | LETTER);
        // ... Garay (Unicode 16.0) is not assigned yet for llama.cpp.
        assert_eq!(flags('\u{10D50}'), ANY);
        assert_eq!(flags('\u{0378}'), ANY);
    }
}

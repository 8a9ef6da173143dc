//! From token ids back to bytes, as llama.cpp's `llama_token_to_piece` and
//! `llama_detokenize` do it.

use super::vocab::{TokenAttr, Vocab, VocabType};

/// The bytes of one token. Control and unknown tokens render as their text
/// only with `special`; user-defined tokens always do; byte-level BPE tokens
/// are mapped back from GPT-2's byte alphabet; SentencePiece tokens get `▁`
/// back as a space; byte tokens `<0xXX>` give their byte. Unused and
/// undefined tokens, and ids out of range, give nothing.
pub(crate) fn token_to_piece(vocab: &Vocab, id: u32, special: bool) -> Vec<u8> {
    let Some(text) = vocab.texts.get(id as usize) else {
        return Vec::new();
    };
    let attr = vocab.attr(id);
    let special_attr = TokenAttr::UNKNOWN | TokenAttr::CONTROL;
    if !special && attr.intersects(special_attr) {
        return Vec::new();
    }
    if attr.intersects(special_attr | TokenAttr::USER_DEFINED) {
        return text.as_bytes().to_vec();
    }
    if attr.intersects(TokenAttr::NORMAL) {
        return match vocab.vtype {
            VocabType::Bpe => byte_level_decode(text),
            VocabType::Spm | VocabType::SpBpe => text.replace('\u{2581}', " ").into_bytes(),
        };
    }
    if attr.intersects(TokenAttr::BYTE) {
        return vec![byte_token_value(text)];
    }
    Vec::new()
}

/// The byte of a `<0xXX>` token: the hex digits from the fourth character on
/// (as `strtol` reads them; 0 when there are none).
fn byte_token_value(text: &str) -> u8 {
    let digits: String = text.chars().skip(3).take(2).take_while(char::is_ascii_hexdigit).collect();
    u8::from_str_radix(&digits, 16).unwrap_or(0)
}

/// Is `b` one of the bytes that GPT-2's byte alphabet keeps as itself?
fn is_printable_byte(b: u32) -> bool {
    (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
}

/// The byte a character of GPT-2's byte alphabet stands for.
pub(crate) fn byte_of_char(c: char) -> Option<u8> {
    let cp = c as u32;
    if is_printable_byte(cp) {
        return Some(cp as u8);
    }
    // The other bytes, in increasing order, are U+0100, U+0101, ...
    let n = cp.checked_sub(0x100)?;
    (0u32..=0xFF).filter(|&b| !is_printable_byte(b)).nth(n as usize).map(|b| b as u8)
}

/// Maps a byte-level token text back to bytes; a character outside the byte
/// alphabet becomes `[UNK_BYTE_0x<utf8 hex><token text>]`, as in llama.cpp.
fn byte_level_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match byte_of_char(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// `llama_detokenize(ids, remove_special = false, unparse_special = special)`:
/// the pieces concatenated, the first piece's leading space dropped when the
/// vocabulary adds a space prefix, then (for vocabularies that ask for it)
/// the spaces before `? ! . ,` and some apostrophes removed.
pub(crate) fn detokenize(vocab: &Vocab, ids: &[u32], special: bool) -> Vec<u8> {
    let mut text = Vec::new();
    let mut remove_space = vocab.add_space_prefix;
    for &id in ids {
        let piece = token_to_piece(vocab, id, special);
        let piece = match piece.split_first() {
            Some((b' ', rest)) if remove_space => rest,
            _ => &piece[..],
        };
        text.extend_from_slice(piece);
        remove_space = false;
    }
    if vocab.clean_spaces {
        clean_spaces(&mut text);
    }
    text
}

/// llama.cpp's three in-place clean-up passes (`clean_up_tokenization_spaces`).
fn clean_spaces(text: &mut Vec<u8>) {
    // " ?", " !", " .", " ,"
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);

    // " ' " -> "'"
    let n = text.len();
    let mut total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);

    // " 's", " 'm", " 're", " 've" lose their space
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            if matches!(x1, b's' | b'm') {
                total -= 1;
            } else if !matches!(x1, b't' | b'd') && i + 2 < n {
                let x2 = text[i + 2];
                if matches!((x1, x2), (b'r', b'e') | (b'v', b'e')) {
                    total -= 1;
                }
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_round_trip() {
        assert_eq!(byte_of_char('A'), Some(b'A'));
        assert_eq!(byte_of_char('Ġ'), Some(b' '));
        assert_eq!(byte_of_char('Ċ'), Some(b'\n'));
        assert_eq!(byte_of_char('\u{100}'), Some(0));
        assert_eq!(byte_of_char('\u{143}'), Some(0xAD));
        assert_eq!(byte_of_char('\u{144}'), None);
        assert_eq!(byte_of_char('中'), None);
        let mut seen = std::collections::HashSet::new();
        for cp in 0..0x200u32 {
            if let Some(b) = char::from_u32(cp).and_then(byte_of_char) {
                assert!(seen.insert(b));
            }
        }
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn byte_tokens() {
        assert_eq!(byte_token_value("<0x0A>"), 10);
        assert_eq!(byte_token_value("<0xfF>"), 255);
        assert_eq!(byte_token_value("<0x"), 0);
    }

    #[test]
    fn clean_up_passes() {
        let mut t = b"Hello , world ! It 's a ' b ' test . I 'm you 're they 'll".to_vec();
        clean_spaces(&mut t);
        assert_eq!(String::from_utf8(t).unwrap(), "Hello, world! It's a'b'test. I'm you're they 'll");
    }
}

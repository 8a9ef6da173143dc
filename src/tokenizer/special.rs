//! Cutting special tokens out of a text before tokenization, as llama.cpp's
//! `tokenizer_st_partition` does: special tokens are tried longest text
//! first; each one splits every remaining text fragment at all of its
//! occurrences (leftmost first). Control and unknown tokens are recognised
//! only with `parse_special`; user-defined tokens always are. A token with
//! the LSTRIP (RSTRIP) attribute swallows the ASCII whitespace before (after) it.

use super::vocab::{TokenAttr, Vocab};

/// A piece of the input: text still to tokenize, or a special token found in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Splits `text` into text fragments and special tokens.
pub(crate) fn partition<'t>(vocab: &Vocab, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut fragments = vec![Fragment::Text(text)];
    for &id in &vocab.special_cache {
        let attr = vocab.attr(id);
        if !parse_special && attr.intersects(TokenAttr::CONTROL | TokenAttr::UNKNOWN) {
            continue;
        }
        let special = vocab.texts[id as usize].as_str();
        if !fragments.iter().any(|f| matches!(f, Fragment::Text(t) if t.contains(special))) {
            continue;
        }
        let mut next = Vec::with_capacity(fragments.len() + 2);
        for fragment in fragments {
            match fragment {
                Fragment::Text(t) => split_at_token(t, special, id, attr, &mut next),
                token => next.push(token),
            }
        }
        fragments = next;
    }
    fragments
}

/// Splits one text fragment at every occurrence of `special`.
fn split_at_token<'t>(text: &'t str, special: &str, id: u32, attr: TokenAttr, out: &mut Vec<Fragment<'t>>) {
    let bytes = text.as_bytes();
    let mut base = 0;
    let end = text.len();
    while let Some(found) = text[base..end].find(special) {
        let m = base + found;
        if m > base {
            let mut left_end = m;
            if attr.intersects(TokenAttr::LSTRIP) {
                while left_end > base && is_c_space(bytes[left_end - 1]) {
                    left_end -= 1;
                }
            }
            if left_end > base {
                out.push(Fragment::Text(&text[base..left_end]));
            }
        }
        out.push(Fragment::Token(id));
        base = m + special.len();
        if base >= end {
            return;
        }
        if attr.intersects(TokenAttr::RSTRIP) {
            while base < end && is_c_space(bytes[base]) {
                base += 1;
            }
        }
        if base == end {
            break;
        }
    }
    if base < end {
        out.push(Fragment::Text(&text[base..end]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::vocab::VocabSpec;

    fn vocab(tokens: &[&str], types: &[i32]) -> Vocab {
        Vocab::from_spec(&VocabSpec {
            model: "gpt2".into(),
            pre: Some("smollm".into()),
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            token_types: types.to_vec(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn control_tokens_only_with_parse_special() {
        let v = vocab(&["<|im_start|>", "<|im_end|>", "<x>", "a"], &[3, 3, 4, 1]);
        let text = "<|im_start|>user\nhi<|im_end|><x>!";
        assert_eq!(
            partition(&v, text, true),
            [
                Fragment::Token(0),
                Fragment::Text("user\nhi"),
                Fragment::Token(1),
                Fragment::Token(2),
                Fragment::Text("!"),
            ]
        );
        assert_eq!(
            partition(&v, text, false),
            [Fragment::Text("<|im_start|>user\nhi<|im_end|>"), Fragment::Token(2), Fragment::Text("!")]
        );
        assert!(partition(&v, "", true).is_empty());
    }

    #[test]
    fn lstrip_and_rstrip() {
        let mut v = vocab(&["<m>", "a"], &[4, 1]);
        v.attrs[0] = TokenAttr::USER_DEFINED | TokenAttr::LSTRIP | TokenAttr::RSTRIP;
        assert_eq!(
            partition(&v, "x  <m>  y <m>\t", false),
            [Fragment::Text("x"), Fragment::Token(0), Fragment::Text("y"), Fragment::Token(0)]
        );
    }
}

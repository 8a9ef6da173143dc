//! What a message's tokens hold inside: `<system-reminder>` and `<think>`
//! blocks (forgettable on their own) and lines (so a log's middle can be
//! forgotten while the lines a question mentions stay). Found from the
//! tokens' own bytes, so the spans are exact for whatever was cached.
use super::segments::SegmentKind;

/// A block inside a message, as a token range `[t0, t1)` of that message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub kind: SegmentKind,
    pub t0: usize,
    pub t1: usize,
}

/// A line of a message, as a token range, with its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenLine {
    pub t0: usize,
    pub t1: usize,
    pub text: String,
}

/// Byte offsets: token `i` covers `starts[i]..starts[i + 1]` of the joined text.
fn layout(pieces: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    let mut text = Vec::new();
    let mut starts = Vec::with_capacity(pieces.len() + 1);
    for p in pieces {
        starts.push(text.len());
        text.extend_from_slice(p);
    }
    starts.push(text.len());
    (text, starts)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

/// Tokens wholly inside bytes `[a, b)`: the first starting at or after `a`
/// up to the last ending at or before `b` (a token straddling an edge stays
/// with the enclosing message).
fn token_span(starts: &[usize], a: usize, b: usize) -> (usize, usize) {
    let n = starts.len() - 1;
    let t0 = starts[..n].partition_point(|&s| s < a);
    let t1 = starts[1..].partition_point(|&e| e <= b);
    (t0, t1.max(t0))
}

/// The key that makes two reminders copies of each other: the first
/// non-blank line of the body, trimmed and cut at 80 bytes.
pub fn reminder_key(body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    let line = body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let mut end = line.len().min(80);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

/// A block inside a text, as a byte range `[a, b)` (tags included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub kind: SegmentKind,
    pub a: usize,
    pub b: usize,
}

/// The `<system-reminder>…</system-reminder>` and `<think>…</think>` blocks
/// of `text`, in order, as byte ranges. An unclosed `<think>` (a reply cut
/// short) runs to the end.
pub fn find_blocks(text: &[u8]) -> Vec<Block> {
    const TAGS: [(&[u8], &[u8]); 2] = [(b"<system-reminder>", b"</system-reminder>"), (b"<think>", b"</think>")];
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let next = TAGS.iter().enumerate().filter_map(|(i, (open, _))| find(text, open, at).map(|p| (p, i))).min();
        let Some((a, which)) = next else { break };
        let (open, close) = TAGS[which];
        let (body_end, b) = match find(text, close, a + open.len()) {
            Some(c) => (c, c + close.len()),
            None => (text.len(), text.len()),
        };
        let kind = match which {
            0 => SegmentKind::SystemReminder { key: reminder_key(&text[a + open.len()..body_end]) },
            _ => SegmentKind::Thinking,
        };
        out.push(Block { kind, a, b });
        at = b.max(a + 1);
    }
    out
}

/// The blocks of [`find_blocks`] in the tokens, as token ranges (a token
/// straddling a tag's edge stays with the enclosing message).
pub fn find_parts(pieces: &[Vec<u8>]) -> Vec<Part> {
    let (text, starts) = layout(pieces);
    find_blocks(&text)
        .into_iter()
        .filter_map(|b| {
            let (t0, t1) = token_span(&starts, b.a, b.b);
            (t0 < t1).then_some(Part { kind: b.kind, t0, t1 })
        })
        .collect()
}

/// The lines of the tokens: a line ends with the token that holds its `\n`.
pub fn token_lines(pieces: &[Vec<u8>]) -> Vec<TokenLine> {
    let mut out = Vec::new();
    let mut t0 = 0;
    let mut text = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        text.extend_from_slice(p);
        if p.contains(&b'\n') || i + 1 == pieces.len() {
            let s = String::from_utf8_lossy(&text);
            out.push(TokenLine { t0, t1: i + 1, text: s.trim_end_matches('\n').to_string() });
            text.clear();
            t0 = i + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn blocks_are_found_as_whole_tokens() {
        // "Hi\n<system-reminder>Be brief.\nMore</system-reminder>\nok <think>hmm</think> done"
        let p = pieces(&[
            "Hi", "\n<", "system", "-reminder", ">", "Be", " brief", ".\n", "More", "</", "system", "-reminder", ">",
            "\n", "ok", " <", "think", ">", "hmm", "</", "think", ">", " done",
        ]);
        let parts = find_parts(&p);
        assert_eq!(parts.len(), 2);
        // The token "\n<" straddles the opening tag: it stays with the message.
        assert_eq!(parts[0], Part { kind: SegmentKind::SystemReminder { key: "Be brief.".into() }, t0: 2, t1: 13 });
        assert_eq!(parts[1], Part { kind: SegmentKind::Thinking, t0: 16, t1: 22 });
    }

    #[test]
    fn an_unclosed_think_runs_to_the_end_and_no_tags_means_no_parts() {
        let p = pieces(&["<think>", "a", "b"]);
        assert_eq!(find_parts(&p), vec![Part { kind: SegmentKind::Thinking, t0: 0, t1: 3 }]);
        assert!(find_parts(&pieces(&["plain", " text", " <b>"])).is_empty());
        assert!(find_parts(&[]).is_empty());
    }

    #[test]
    fn lines_end_with_their_newline_token() {
        let p = pieces(&["a", " b", "\n", "c", "\n\n", "d"]);
        let lines = token_lines(&p);
        let spans: Vec<(usize, usize, &str)> = lines.iter().map(|l| (l.t0, l.t1, l.text.as_str())).collect();
        assert_eq!(spans, vec![(0, 3, "a b"), (3, 5, "c"), (5, 6, "d")]);
    }
}

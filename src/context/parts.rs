//! What a message holds inside: `<system-reminder>` and `<think>` blocks
//! (forgettable on their own) and lines (so a log's middle can be forgotten
//! while the lines a question mentions stay). One layout cuts a message for
//! both users: a `Conversation` cuts the tokens it cached (found from the
//! tokens' own bytes, so the spans are exact for whatever was cached), the
//! server's auto-pruning cuts a request's text by byte.
use super::segments::SegmentKind;

/// What the spans of [`message_layout`] and [`message_lines`] count.
#[derive(Clone, Copy, Debug)]
pub enum Units<'a> {
    /// Bytes of the text.
    Bytes,
    /// Tokens: token `i` covers bytes `starts[i]..starts[i + 1]` of the
    /// text (the last entry is the text's length; see [`join`]).
    Tokens(&'a [usize]),
}

impl Units<'_> {
    /// How many units `text` holds.
    fn count(self, text: &[u8]) -> usize {
        match self {
            Units::Bytes => text.len(),
            Units::Tokens(starts) => starts.len() - 1,
        }
    }

    /// The bytes of units `[a, b)`.
    fn bytes(self, a: usize, b: usize) -> (usize, usize) {
        match self {
            Units::Bytes => (a, b),
            Units::Tokens(starts) => (starts[a], starts[b]),
        }
    }

    /// The units wholly inside bytes `[a, b)`: for tokens, the first
    /// starting at or after `a` up to the last ending at or before `b` (a
    /// token straddling an edge stays with the text around it).
    fn within(self, a: usize, b: usize) -> (usize, usize) {
        match self {
            Units::Bytes => (a, b),
            Units::Tokens(starts) => {
                let n = starts.len() - 1;
                let t0 = starts[..n].partition_point(|&s| s < a);
                let t1 = starts[1..].partition_point(|&e| e <= b);
                (t0, t1.max(t0))
            }
        }
    }
}

/// The tokens' pieces joined into one text, and where each starts (for
/// [`Units::Tokens`]).
pub fn join(pieces: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
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

/// One span of a message: one of its blocks (`block` its kind), or
/// (`block: None`) the message's own text between blocks, in units `[a, b)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub block: Option<SegmentKind>,
    pub a: usize,
    pub b: usize,
}

/// A message cut into spans, in order, tiling all of it: its blocks (see
/// [`find_blocks`]) and the text between them; at least one span, even for
/// an empty message. A message that is `whole` (a system prompt, or one
/// that is itself a reminder or thinking) is one span of its own text. In
/// tokens, a token straddling a block's edge stays with the text around the
/// block, and a block holding no whole token is not cut out.
pub fn message_layout(text: &[u8], units: Units<'_>, whole: bool) -> Vec<Span> {
    let n = units.count(text);
    let blocks = if whole { Vec::new() } else { find_blocks(text) };
    let mut out = Vec::new();
    let mut at = 0;
    for block in blocks {
        let (a, b) = units.within(block.a, block.b);
        if a >= b {
            continue;
        }
        if a > at {
            out.push(Span { block: None, a: at, b: a });
        }
        out.push(Span { block: Some(block.kind), a, b });
        at = b;
    }
    if at < n || out.is_empty() {
        out.push(Span { block: None, a: at, b: n });
    }
    out
}

/// A line of a message, in units `[a, b)`, with its text (without its `\n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextLine {
    pub a: usize,
    pub b: usize,
    pub text: String,
}

/// The lines of units `[a, b)` of `text`: a line ends with the unit that
/// holds its `\n` (a token holding several ends one line), or at `b`.
pub fn message_lines(text: &[u8], units: Units<'_>, a: usize, b: usize) -> Vec<TextLine> {
    let mut out = Vec::new();
    let mut l0 = a;
    for u in a..b {
        let (x, y) = units.bytes(u, u + 1);
        if text[x..y].contains(&b'\n') || u + 1 == b {
            let (x0, y1) = units.bytes(l0, u + 1);
            let s = String::from_utf8_lossy(&text[x0..y1]);
            out.push(TextLine { a: l0, b: u + 1, text: s.trim_end_matches('\n').to_string() });
            l0 = u + 1;
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

    /// The spans of a message given as tokens, as (kind, t0, t1), `None` the message's own text.
    fn token_spans(words: &[&str], whole: bool) -> Vec<(Option<SegmentKind>, usize, usize)> {
        let (text, starts) = join(&pieces(words));
        message_layout(&text, Units::Tokens(&starts), whole).into_iter().map(|s| (s.block, s.a, s.b)).collect()
    }

    #[test]
    fn blocks_are_found_as_whole_tokens() {
        // "Hi\n<system-reminder>Be brief.\nMore</system-reminder>\nok <think>hmm</think> done"
        let words = [
            "Hi",
            "\n<",
            "system",
            "-reminder",
            ">",
            "Be",
            " brief",
            ".\n",
            "More",
            "</",
            "system",
            "-reminder",
            ">",
            "\n",
            "ok",
            " <",
            "think",
            ">",
            "hmm",
            "</",
            "think",
            ">",
            " done",
        ];
        let reminder = Some(SegmentKind::SystemReminder { key: "Be brief.".into() });
        // The token "\n<" straddles the opening tag: it stays with the message.
        assert_eq!(
            token_spans(&words, false),
            vec![
                (None, 0, 2),
                (reminder, 2, 13),
                (None, 13, 16),
                (Some(SegmentKind::Thinking), 16, 22),
                (None, 22, 23)
            ]
        );
        assert_eq!(token_spans(&words, true), vec![(None, 0, 23)], "a whole message is not cut");
        // By byte, the blocks are exactly the tags and what they enclose.
        let text = words.concat();
        let spans = message_layout(text.as_bytes(), Units::Bytes, false);
        let cut: Vec<&str> = spans.iter().map(|s| &text[s.a..s.b]).collect();
        assert_eq!(
            cut,
            ["Hi\n", "<system-reminder>Be brief.\nMore</system-reminder>", "\nok ", "<think>hmm</think>", " done"]
        );
    }

    #[test]
    fn an_unclosed_think_runs_to_the_end_and_no_tags_means_one_span() {
        assert_eq!(token_spans(&["<think>", "a", "b"], false), vec![(Some(SegmentKind::Thinking), 0, 3)]);
        assert_eq!(token_spans(&["plain", " text", " <b>"], false), vec![(None, 0, 3)]);
        assert_eq!(token_spans(&[], false), vec![(None, 0, 0)]);
        // A block inside one token holds no whole token: not cut out.
        assert_eq!(token_spans(&["a<think>b</think>c"], false), vec![(None, 0, 1)]);
        assert_eq!(message_layout(b"", Units::Bytes, false), vec![Span { block: None, a: 0, b: 0 }]);
    }

    #[test]
    fn lines_end_with_their_newline_unit() {
        let (text, starts) = join(&pieces(&["a", " b", "\n", "c", "\n\n", "d"]));
        let spans = |ls: Vec<TextLine>| ls.into_iter().map(|l| (l.a, l.b, l.text)).collect::<Vec<_>>();
        let s = |x: &str| x.to_string();
        assert_eq!(
            spans(message_lines(&text, Units::Tokens(&starts), 0, 6)),
            vec![(0, 3, s("a b")), (3, 5, s("c")), (5, 6, s("d"))]
        );
        assert_eq!(spans(message_lines(&text, Units::Tokens(&starts), 3, 5)), vec![(3, 5, s("c"))]);
        // By byte, each `\n` ends a line.
        let bytes: Vec<(usize, usize)> =
            message_lines(b"a\nbc\n\nd", Units::Bytes, 0, 7).into_iter().map(|l| (l.a, l.b)).collect();
        assert_eq!(bytes, vec![(0, 2), (2, 5), (5, 6), (6, 7)]);
        assert!(message_lines(b"abc", Units::Bytes, 1, 1).is_empty());
    }
}

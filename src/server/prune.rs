//! Auto-pruning: when a request would pass the decache watermark, the
//! server prunes it itself with the decache policy (superseded reminders,
//! unapplied hooks, stale file reads, the bodies of passing logs, finished
//! thinking, the middles of long outputs, then the oldest turns). It cuts
//! inside messages where the policy forgets a part of one (a reminder in a
//! user message or a tool result, a `<think>` block in a reply, the lines of
//! a log) and drops a message only when all of it goes. What it cut is
//! remembered by the message's content hash, so that later requests carrying
//! the same history are cut the same way and keep hitting the cache: the
//! pruned request meets the cache as a subconscious hit, what stays is
//! reused in place, nothing is recomputed.
use crate::context::parts::{message_layout, message_lines, Span, Units};
use crate::context::policy::{focus_words, DecachePolicy};
use crate::context::segments::{Line, SegmentKind, Segments};
use crate::kv::Pos;
use crate::tokenizer::ChatMessage;
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

/// Most remembered edits (oldest forgotten first beyond this).
const MEMORY: usize = 20_000;

/// Tokens the template puts around a message (role header, end marker).
const FRAME: usize = 4;

/// A long output (tool result or user paste) of at least this many lines
/// may lose its middle.
const LONG_LINES: usize = 8;

/// Bytes `[a, b)` of a message's content, replaced by `with`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cut {
    a: usize,
    b: usize,
    with: String,
}

/// What compaction did to one message.
#[derive(Clone, Debug)]
enum Edit {
    /// The message went.
    Whole,
    /// Cuts inside it, in rounds: each round's byte ranges refer to the text
    /// the rounds before it left.
    Cuts(Vec<Vec<Cut>>),
}

/// What compaction took from a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Messages dropped whole.
    pub messages: usize,
    /// Messages cut inside (a block or lines gone, the rest kept).
    pub parts: usize,
}

pub struct Pruner {
    pub policy: DecachePolicy,
    memory: Mutex<(HashMap<u64, Edit>, VecDeque<u64>)>,
}

/// A request after compaction.
/// Renders and tokenizes messages (the server's template and tokenizer).
pub type Encode<'a, E> = dyn Fn(&[ChatMessage]) -> Result<Vec<u32>, E> + 'a;

pub struct PrunedRequest {
    pub messages: Vec<ChatMessage>,
    /// The prompt's tokens, rendered from `messages`.
    pub tokens: Vec<u32>,
    pub pruned: Pruned,
}

/// Keys of the messages: a hash of role and content, and of which copy of
/// that message it is (the same reminder sent five times has five keys, so
/// pruning old copies never prunes the newest).
fn keys(msgs: &[ChatMessage]) -> Vec<u64> {
    let mut seen: HashMap<u64, u64> = HashMap::new();
    msgs.iter()
        .map(|m| {
            let mut h = DefaultHasher::new();
            m.role.hash(&mut h);
            m.content.hash(&mut h);
            let base = h.finish();
            let copy = seen.entry(base).or_insert(0);
            *copy += 1;
            let mut h = DefaultHasher::new();
            (base, *copy).hash(&mut h);
            h.finish()
        })
        .collect()
}

/// What the body of a message is (its text outside reminder and thinking
/// blocks), for the policy.
fn kind_of(role: &str, body: &str) -> SegmentKind {
    let c = body.trim();
    match role {
        "system" => SegmentKind::System,
        "assistant" => SegmentKind::Assistant,
        "tool" => {
            let first = c.lines().next().unwrap_or("");
            let lower = c.to_lowercase();
            if lower.contains("test result: ok") || (lower.contains(" passed") && !lower.contains("fail")) {
                SegmentKind::CommandOutput { passed: Some(true) }
            } else if first.ends_with(':') && !first.contains(' ') {
                SegmentKind::FileRead { path: first.trim_end_matches(':').to_string() }
            } else {
                SegmentKind::CommandOutput { passed: None }
            }
        }
        _ => SegmentKind::User,
    }
}

/// Apply one round of cuts (sorted, not overlapping) to `text`.
fn apply(text: &str, cuts: &[Cut]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for c in cuts {
        if c.a < at || c.b > text.len() || !text.is_char_boundary(c.a) || !text.is_char_boundary(c.b) {
            continue; // not this text's cut (a hash collision): leave the text be
        }
        out.push_str(&text[at..c.a]);
        out.push_str(&c.with);
        at = c.b;
    }
    out.push_str(&text[at..]);
    out
}

/// A piece of one message as the policy sees it: a block, or the text
/// between blocks, with its lines when it is a log.
struct Piece {
    msg: usize,
    a: usize,
    b: usize,
    seg: u64,
    /// Byte ranges of the lines (logs only), beside the segment's lines.
    lines: Vec<(usize, usize)>,
}

/// The segments of `msgs` for the policy, with their pieces, the live
/// total (in estimated tokens), the turn and the question.
struct Layout {
    segs: Segments,
    pieces: Vec<Piece>,
    total: usize,
    turn: u32,
    question: String,
}

fn layout(msgs: &[ChatMessage], count: &dyn Fn(&str) -> usize, paste_keep: usize) -> Layout {
    let mut segs = Segments::default();
    let mut pieces = Vec::new();
    let (mut pos, mut turn) = (0 as Pos, 0u32);
    let mut question = String::new();
    for (i, m) in msgs.iter().enumerate() {
        let text = m.content.as_str();
        let spans = message_layout(text.as_bytes(), Units::Bytes, m.role == "system");
        let body: String = spans.iter().filter(|s| s.block.is_none()).map(|s| &text[s.a..s.b]).collect();
        let base = kind_of(&m.role, &body);
        if m.role == "user" && !body.trim().is_empty() {
            turn += 1;
            question = body.clone();
        }
        pos += FRAME as Pos;
        for Span { block, a, b } in spans {
            let mut kind = block.unwrap_or_else(|| base.clone());
            let logs = matches!(kind, SegmentKind::CommandOutput { .. } | SegmentKind::User);
            let text_lines = if logs { message_lines(text.as_bytes(), Units::Bytes, a, b) } else { Vec::new() };
            let (n, lines) = if text_lines.len() >= LONG_LINES {
                let mut p = pos;
                let lines: Vec<Line> = text_lines
                    .iter()
                    .map(|l| {
                        let p0 = p;
                        p += count(&text[l.a..l.b]) as Pos;
                        Line { p0, p1: p, text: l.text.clone() }
                    })
                    .collect();
                ((p - pos) as usize, lines)
            } else {
                (count(&text[a..b]), Vec::new())
            };
            // A long output that is not known to pass, or a long paste in a
            // past turn, may lose its middle.
            let last = i + 1 == msgs.len();
            if !lines.is_empty()
                && n > 3 * paste_keep
                && !last
                && matches!(kind, SegmentKind::CommandOutput { passed: None } | SegmentKind::User)
            {
                kind = SegmentKind::PastedLog;
            }
            let seg = segs.push(kind, turn, pos, pos + n as Pos);
            let keep_lines = !lines.is_empty();
            segs.set_lines(seg, lines);
            let ranges = if keep_lines { text_lines.iter().map(|l| (l.a, l.b)).collect() } else { Vec::new() };
            pieces.push(Piece { msg: i, a, b, seg, lines: ranges });
            pos += n as Pos;
        }
    }
    Layout { segs, pieces, total: pos as usize, turn, question }
}

impl Pruner {
    pub fn new(policy: DecachePolicy) -> Pruner {
        Pruner { policy, memory: Mutex::default() }
    }

    fn remember(&self, key: u64, edit: Edit) {
        let mut g = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *g;
        match (map.get_mut(&key), edit) {
            (Some(Edit::Cuts(rounds)), Edit::Cuts(more)) => rounds.extend(more),
            (_, edit) => {
                if map.insert(key, edit).is_none() {
                    order.push_back(key);
                }
            }
        }
        while order.len() > MEMORY {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    fn recall(&self, key: u64) -> Option<Edit> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner()).0.get(&key).cloned()
    }

    /// Apply remembered edits to `msgs` and `encode` them (render and
    /// tokenize); if the prompt needs at least `at` of `n_ctx` cells, plan
    /// by the policy down to `to` (`count` gives a text's tokens), cut what
    /// the plan takes, remember it, and encode again. The last message (the
    /// one being answered) is never touched. Below the watermark, `encode`
    /// runs once and nothing is counted.
    pub fn prune<E>(
        &self,
        msgs: Vec<ChatMessage>,
        n_ctx: usize,
        encode: &Encode<'_, E>,
        count: &dyn Fn(&str) -> usize,
    ) -> Result<PrunedRequest, E> {
        let last = msgs.len().saturating_sub(1);
        let mut pruned = Pruned::default();
        // The messages left after what was remembered, with their keys and
        // whether they were cut before.
        let ks = keys(&msgs);
        let mut left: Vec<(ChatMessage, u64, bool)> = Vec::with_capacity(msgs.len());
        for (i, (mut m, k)) in msgs.into_iter().zip(ks).enumerate() {
            match self.recall(k).filter(|_| i != last) {
                Some(Edit::Whole) => {
                    pruned.messages += 1;
                    continue;
                }
                Some(Edit::Cuts(rounds)) => {
                    for r in &rounds {
                        m.content = apply(&m.content, r);
                    }
                    left.push((m, k, true));
                }
                None => left.push((m, k, false)),
            }
        }
        let (msgs, rest): (Vec<ChatMessage>, Vec<(u64, bool)>) = left.into_iter().map(|(m, k, c)| (m, (k, c))).unzip();
        let tokens = encode(&msgs)?;
        if !self.policy.should_decache(tokens.len(), n_ctx) {
            pruned.parts = rest.iter().filter(|r| r.1).count();
            return Ok(PrunedRequest { messages: msgs, tokens, pruned });
        }
        let lay = layout(&msgs, count, self.policy.paste_keep);
        let cuts = self.cuts(&msgs, &lay, n_ctx);
        let changed = cuts.iter().take(last.min(cuts.len())).any(|c| !c.0.is_empty());
        let mut kept = Vec::with_capacity(msgs.len());
        for (i, ((mut m, (k, cut_before)), (mut cuts, whole))) in msgs.into_iter().zip(rest).zip(cuts).enumerate() {
            if i != last && !cuts.is_empty() {
                if whole {
                    self.remember(k, Edit::Whole);
                    pruned.messages += 1;
                    continue;
                }
                cuts.sort_by_key(|c| c.a);
                m.content = apply(&m.content, &cuts);
                self.remember(k, Edit::Cuts(vec![cuts]));
                pruned.parts += 1;
            } else if cut_before {
                pruned.parts += 1;
            }
            kept.push(m);
        }
        let tokens = if changed { encode(&kept)? } else { tokens };
        Ok(PrunedRequest { messages: kept, tokens, pruned })
    }

    /// Cuts for each message from the policy's plan over the layout: a
    /// piece wholly taken is cut out; of a piece partly taken, the lines
    /// wholly inside the taken spans go, each run of them replaced by a note
    /// of how many. Also whether every piece of the message was taken.
    fn cuts(&self, msgs: &[ChatMessage], lay: &Layout, n_ctx: usize) -> Vec<(Vec<Cut>, bool)> {
        let plan = self.policy.plan(&lay.segs, lay.total, n_ctx, lay.turn, &focus_words(&lay.question));
        let mut out: Vec<(Vec<Cut>, bool)> = vec![(Vec::new(), true); msgs.len()];
        for p in &lay.pieces {
            let Some(seg) = lay.segs.get(p.seg) else {
                continue;
            };
            let taken: Vec<(Pos, Pos)> = plan.iter().filter(|f| f.segment == p.seg).map(|f| (f.p0, f.p1)).collect();
            let sum: usize = taken.iter().map(|(a, b)| (b - a) as usize).sum();
            let (cuts, whole) = &mut out[p.msg];
            if sum >= seg.len() {
                if p.b > p.a {
                    cuts.push(Cut { a: p.a, b: p.b, with: String::new() });
                }
                continue;
            }
            *whole = false;
            let gone: Vec<bool> =
                seg.lines.iter().map(|l| taken.iter().any(|&(a, b)| a <= l.p0 && l.p1 <= b)).collect();
            let text = &msgs[p.msg].content;
            let mut i = 0;
            while i < gone.len() {
                let j = (i..gone.len()).find(|&j| !gone[j]).unwrap_or(gone.len());
                if j >= i + 2 {
                    let (a, b) = (p.lines[i].0, p.lines[j - 1].1);
                    let nl = if text[..b].ends_with('\n') { "\n" } else { "" };
                    cuts.push(Cut { a, b, with: format!("[… {} lines decached …]{nl}", j - i) });
                }
                i = j + 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage::new(role, content)
    }

    /// About one token per four bytes, plus the frame.
    fn count(t: &str) -> usize {
        t.len().div_ceil(4)
    }

    fn encode(m: &[ChatMessage]) -> Result<Vec<u32>, ()> {
        Ok(vec![0; m.iter().map(|m| count(&m.content) + FRAME).sum()])
    }

    fn size(h: &[ChatMessage]) -> usize {
        encode(h).unwrap().len()
    }

    #[test]
    fn prunes_whole_messages_by_meaning_remembers_and_never_drops_the_question() {
        let c = Pruner::new(DecachePolicy::default());
        let read = format!("src/a.rs:\n{}", "fn a() {}\n".repeat(60));
        let mut history = vec![msg("system", "You are an agent.")];
        for t in 0..6 {
            history.push(msg("user", &format!("step {t}: fix it")));
            history.push(msg("user", "<system-reminder>Todo list: keep it current.</system-reminder>"));
            history.push(msg("tool", &read));
            history.push(msg("assistant", "Done."));
        }
        history.push(msg("user", "What next?"));
        let total = size(&history);
        let out = c.prune(history.clone(), total, &encode, &count).unwrap();
        assert!(out.pruned.messages > 0, "nothing pruned at 100% of the cells");
        assert_eq!(out.messages.last().unwrap().content, "What next?");
        assert_eq!(out.messages[0].role, "system");
        let reminders = out.messages.iter().filter(|m| m.content.starts_with("<system-reminder>")).count();
        assert_eq!(reminders, 1, "older copies of the reminder go first, the newest stays");
        assert!(size(&out.messages) <= total * 7 / 10 + 40, "down to the target: {}", size(&out.messages));
        // The same history again: pruned the same way from memory, even below the watermark.
        let again = c.prune(history.clone(), 100 * total, &encode, &count).unwrap();
        assert_eq!(again.messages, out.messages);
        assert_eq!(again.pruned, out.pruned);
        // Well below the watermark, a fresh pruner leaves the request alone.
        let fresh = Pruner::new(DecachePolicy::default());
        assert_eq!(fresh.prune(history.clone(), 100 * total, &encode, &count).unwrap().pruned, Pruned::default());
        assert!(matches!(
            kind_of("tool", "test result: ok. 3 passed"),
            SegmentKind::CommandOutput { passed: Some(true) }
        ));
        assert!(matches!(kind_of("tool", &read), SegmentKind::FileRead { .. }));
    }

    /// A history whose prunable content sits inside messages: reminders in
    /// user messages and tool results, thinking in replies, long logs.
    fn inner_history(turns: usize) -> Vec<ChatMessage> {
        let passing = format!("{}test result: ok. 80 passed; 0 failed\n", "test parser::case ... ok\n".repeat(80));
        let failing: String =
            (0..120)
                .map(|i| {
                    if i == 60 {
                        "error: tokenizer overflow at byte 7\n".to_string()
                    } else {
                        format!("step {i} fine\n")
                    }
                })
                .collect();
        let mut h = vec![msg("system", "You are an agent.")];
        for t in 0..turns {
            h.push(msg(
                "user",
                &format!("Step {t}: fix the parser.\n<system-reminder>Todo list: keep it current.</system-reminder>"),
            ));
            h.push(msg(
                "assistant",
                &format!("<think>{}</think>Running the tests.", "Let me think about the parser. ".repeat(20)),
            ));
            h.push(msg("tool", &passing));
            h.push(msg(
                "tool",
                &format!("{failing}<system-reminder>Consider whether the output looks malicious.</system-reminder>"),
            ));
            h.push(msg("assistant", &format!("Step {t} is done.")));
        }
        h.push(msg("user", "Why did the tokenizer overflow?"));
        h
    }

    #[test]
    fn cuts_inside_messages_keeping_what_the_policy_keeps() {
        let c = Pruner::new(DecachePolicy { at: 0.9, to: 0.5, ..DecachePolicy::default() });
        let history = inner_history(6);
        let total = size(&history);
        let out = c.prune(history.clone(), total, &encode, &count).unwrap();
        assert!(out.pruned.parts > 0, "{:?}", out.pruned);
        assert_eq!(out.messages.len(), history.len() - out.pruned.messages);
        assert_eq!(out.messages.last(), history.last(), "the question is untouched");
        let text: Vec<&str> = out.messages.iter().map(|m| m.content.as_str()).collect();
        // Every user step survives; only the newest reminder copy does.
        for t in 0..6 {
            assert!(text.iter().any(|m| m.starts_with(&format!("Step {t}: fix the parser."))), "step {t} lost");
        }
        let todo = text.iter().filter(|m| m.contains("<system-reminder>Todo list")).count();
        assert_eq!(todo, 1, "{text:#?}");
        // Old thinking went, the replies stayed.
        let thinking = text.iter().filter(|m| m.contains("<think>")).count();
        assert!(thinking < 6, "{thinking} thinking blocks left");
        assert_eq!(text.iter().filter(|m| m.ends_with("Running the tests.")).count(), 6);
        // A cut passing log keeps its summary line and says what went.
        let logs: Vec<&&str> = text.iter().filter(|m| m.contains("80 passed")).collect();
        assert_eq!(logs.len(), 6);
        let cut = logs.iter().find(|m| m.contains("lines decached")).expect("no passing log was cut");
        assert!(cut.ends_with("test result: ok. 80 passed; 0 failed\n"), "{cut}");
        // A long failing output keeps its head, its tail and the line the question mentions.
        let outs: Vec<&&str> = text.iter().filter(|m| m.contains("step 0 fine")).collect();
        let cut = outs.iter().find(|m| m.contains("lines decached")).expect("no long output was cut");
        assert!(cut.contains("error: tokenizer overflow at byte 7") && cut.contains("step 119 fine"), "{cut}");
        assert!(size(&out.messages) < total * 6 / 10, "{} of {total}", size(&out.messages));
        // The same history next turn (plus the answer) is cut the same way from memory.
        let mut next = history.clone();
        next.push(msg("assistant", "Because of byte 7."));
        next.push(msg("user", "Fix it."));
        let again = c.prune(next, 100 * total, &encode, &count).unwrap();
        assert_eq!(&again.messages[..out.messages.len()], &out.messages[..]);
        assert_eq!(again.pruned, out.pruned);
    }

    #[test]
    fn edits_apply_in_rounds_and_skip_cuts_that_do_not_fit() {
        let cuts = vec![Cut { a: 0, b: 2, with: "X".into() }, Cut { a: 4, b: 6, with: String::new() }];
        assert_eq!(apply("abcdefgh", &cuts), "Xcdgh");
        // A cut beyond the text or overlapping the one before is skipped.
        let bad = vec![Cut { a: 1, b: 3, with: String::new() }, Cut { a: 2, b: 99, with: String::new() }];
        assert_eq!(apply("abcdef", &bad), "adef");
        // Not on a character boundary: skipped rather than a panic.
        assert_eq!(apply("é!", &[Cut { a: 1, b: 2, with: String::new() }]), "é!");
    }
}

//! Auto-compaction: when a request would pass the decache watermark, the
//! server prunes it itself with the decache policy (superseded reminders,
//! stale file reads, passing logs, unapplied hooks, then the oldest turns),
//! whole messages at a time, and remembers what it pruned by content hash so
//! that later requests carrying the same history are pruned the same way
//! and keep hitting the cache. The pruned request then meets the cache as a
//! subconscious hit: what stays is reused in place, nothing is recomputed.
use crate::session::policy::{focus_words, DecachePolicy};
use crate::session::segments::{SegmentKind, Segments};
use crate::tokenizer::ChatMessage;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

/// Most remembered prunings (oldest forgotten first beyond this).
const MEMORY: usize = 100_000;

pub struct Compactor {
    pub policy: DecachePolicy,
    pruned: Mutex<(HashSet<u64>, std::collections::VecDeque<u64>)>,
}

/// A request after compaction.
pub struct Compacted {
    pub messages: Vec<ChatMessage>,
    /// The prompt's tokens, rendered from `messages`.
    pub tokens: Vec<u32>,
    /// Messages dropped (remembered ones and new ones).
    pub pruned: usize,
}

/// Keys of the messages: a hash of role and content, and of which copy of
/// that message it is (the same reminder sent five times has five keys, so
/// pruning old copies never prunes the newest).
fn keys(msgs: &[ChatMessage]) -> Vec<u64> {
    let mut seen: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
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

/// What a message is, for the policy.
fn kind_of(m: &ChatMessage) -> SegmentKind {
    let c = m.content.trim();
    match m.role.as_str() {
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
        _ => match c.strip_prefix("<system-reminder>").and_then(|r| r.strip_suffix("</system-reminder>")) {
            Some(body) => SegmentKind::SystemReminder { key: body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string() },
            None => SegmentKind::User,
        },
    }
}

impl Compactor {
    pub fn new(policy: DecachePolicy) -> Compactor {
        Compactor { policy, pruned: Mutex::default() }
    }

    fn remember(&self, h: u64) {
        let mut g = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.insert(h) {
            g.1.push_back(h);
            if g.1.len() > MEMORY {
                if let Some(old) = g.1.pop_front() {
                    g.0.remove(&old);
                }
            }
        }
    }

    fn remembered(&self, h: u64) -> bool {
        self.pruned.lock().unwrap_or_else(|e| e.into_inner()).0.contains(&h)
    }

    /// Apply remembered pruning to `msgs` and `encode` them (render and
    /// tokenize); if the prompt needs at least `at` of `n_ctx` cells, prune
    /// whole messages by the policy down to `to` (`count` gives a message's
    /// tokens), remember them, and encode again. The last message (the one
    /// being answered) is never pruned. Below the watermark, `encode` runs
    /// once and no message is measured alone.
    pub fn compact<E>(
        &self, msgs: Vec<ChatMessage>, n_ctx: usize, encode: &dyn Fn(&[ChatMessage]) -> Result<Vec<u32>, E>,
        count: &dyn Fn(&ChatMessage) -> usize,
    ) -> Result<Compacted, E> {
        let last = msgs.len().saturating_sub(1);
        let before = msgs.len();
        let ks = keys(&msgs);
        let (msgs, ks): (Vec<ChatMessage>, Vec<u64>) =
            msgs.into_iter().zip(ks).enumerate().filter(|(i, (_, k))| *i == last || !self.remembered(*k)).map(|(_, p)| p).unzip();
        let tokens = encode(&msgs)?;
        if !self.policy.should_decache(tokens.len(), n_ctx) {
            return Ok(Compacted { pruned: before - msgs.len(), messages: msgs, tokens });
        }
        let lens: Vec<usize> = msgs.iter().map(count).collect();
        let total: usize = lens.iter().sum();
        let mut segs = Segments::default();
        let (mut pos, mut turn) = (0i32, 0u32);
        let mut question = String::new();
        for (m, &n) in msgs.iter().zip(&lens) {
            let kind = kind_of(m);
            if kind.starts_turn() {
                turn += 1;
                question = m.content.clone();
            }
            segs.push(kind, turn, pos, pos + n as i32);
            pos += n as i32;
        }
        let plan = self.policy.plan(&segs, total, n_ctx, turn, &focus_words(&question));
        // Whole messages only: a message goes when the plan takes all of it.
        let n = msgs.len();
        let mut kept = Vec::with_capacity(n);
        for (i, ((m, k), s)) in msgs.into_iter().zip(ks).zip(segs.iter()).enumerate() {
            let taken: i32 = plan.iter().filter(|f| f.segment == s.id).map(|f| f.p1 - f.p0).sum();
            if i != n - 1 && s.len() > 0 && taken as usize >= s.len() {
                self.remember(k);
            } else {
                kept.push(m);
            }
        }
        let tokens = if kept.len() < n { encode(&kept)? } else { tokens };
        Ok(Compacted { pruned: before - kept.len(), messages: kept, tokens })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage::new(role, content)
    }

    #[test]
    fn prunes_by_meaning_remembers_and_never_drops_the_question() {
        let c = Compactor::new(DecachePolicy::default());
        let count = |m: &ChatMessage| m.content.len() / 4;
        let read = format!("src/a.rs:\n{}", "fn a() {}\n".repeat(60));
        let mut history = vec![msg("system", "You are an agent.")];
        for t in 0..6 {
            history.push(msg("user", &format!("step {t}: fix it")));
            history.push(msg("user", "<system-reminder>Todo list: keep it current.</system-reminder>"));
            history.push(msg("tool", &read));
            history.push(msg("assistant", "Done."));
        }
        history.push(msg("user", "What next?"));
        let total: usize = history.iter().map(count).sum();
        let encode = |m: &[ChatMessage]| Ok::<_, ()>(vec![0; m.iter().map(count).sum()]);
        let out = c.compact(history.clone(), total, &encode, &count).unwrap();
        assert!(out.pruned > 0, "nothing pruned at 100% of the cells");
        assert_eq!(out.messages.last().unwrap().content, "What next?");
        assert_eq!(out.messages[0].role, "system");
        let reminders = out.messages.iter().filter(|m| m.content.starts_with("<system-reminder>")).count();
        assert_eq!(reminders, 1, "older copies of the reminder go first, the newest stays");
        // The same history again: pruned the same way from memory, even below the watermark.
        let again = c.compact(history.clone(), 100 * total, &encode, &count).unwrap();
        assert_eq!(again.messages, out.messages);
        assert_eq!(again.pruned, out.pruned);
        // Well below the watermark, a fresh compactor leaves the request alone.
        let fresh = Compactor::new(DecachePolicy::default());
        assert_eq!(fresh.compact(history.clone(), 100 * total, &encode, &count).unwrap().pruned, 0);
        assert!(matches!(kind_of(&msg("tool", "test result: ok. 3 passed")), SegmentKind::CommandOutput { passed: Some(true) }));
        assert!(matches!(kind_of(&msg("tool", &read)), SegmentKind::FileRead { .. }));
    }
}

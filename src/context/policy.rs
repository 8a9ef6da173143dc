//! The decache policy: when to forget (watermarks on live cells) and what,
//! in priority order, by meaning. It needs no model: it returns a plan over
//! segments, which a `Conversation` carries out on its cache (reporting each
//! deletion as a decache event) and the server's auto-pruning carries out
//! on the request's messages.
use super::segments::{Segment, SegmentKind, Segments};
use crate::kv::Pos;

/// Why a span was forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Reason {
    /// An older copy of a reminder that was injected again.
    SupersededReminder,
    /// Hook output that did not apply.
    UnappliedHook,
    /// A file read that is old or was read again later (re-readable).
    StaleFileRead,
    /// The body of a passing run's log (its summary at the end is kept).
    PassingLog,
    /// Reasoning of a finished turn.
    FinishedThinking,
    /// The middle of a long paste or tool output (head, tail and the lines the question mentions kept).
    LongPasteMiddle,
    /// Nothing better was left: the oldest turns go first (last resort, so
    /// that a session never stops at the context limit).
    Oldest,
    /// The user asked (`/forget`).
    Manual,
    /// The model asked (the agent's `forget` tool).
    ByModel,
    /// The chat template no longer renders it (earlier turns' thinking,
    /// dropped once a new message comes).
    TemplateDropped,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::SupersededReminder => "superseded reminder",
            Reason::UnappliedHook => "hook output that did not apply",
            Reason::StaleFileRead => "stale file read",
            Reason::PassingLog => "passing log",
            Reason::FinishedThinking => "finished thinking",
            Reason::LongPasteMiddle => "middle of a long output",
            Reason::Oldest => "oldest turn",
            Reason::Manual => "forgotten on request",
            Reason::ByModel => "forgotten by the model",
            Reason::TemplateDropped => "dropped by the chat template",
        }
    }
}

/// One planned deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forget {
    pub segment: u64,
    pub p0: Pos,
    pub p1: Pos,
    pub reason: Reason,
}

#[derive(Clone, Debug)]
pub struct DecachePolicy {
    /// Start forgetting when live cells reach this share of the cache (`--decache-at`).
    pub at: f32,
    /// Forget until live cells are at most this share (`--decache-to`).
    pub to: f32,
    /// Never touch the last this many turns.
    pub keep_last_turns: u32,
    /// File reads older than this many turns are stale.
    pub file_read_max_age: u32,
    /// Tokens kept at the end of a passing log (its summary).
    pub log_keep_tail: usize,
    /// Tokens kept at the head and at the tail of a long paste.
    pub paste_keep: usize,
}

impl Default for DecachePolicy {
    fn default() -> Self {
        DecachePolicy { at: 0.9, to: 0.7, keep_last_turns: 2, file_read_max_age: 4, log_keep_tail: 32, paste_keep: 128 }
    }
}

impl DecachePolicy {
    pub fn should_decache(&self, live: usize, cells: usize) -> bool {
        live as f64 >= self.at as f64 * cells as f64
    }

    /// Spans to forget, highest priority first, until `live` would be at
    /// most `to` of `cells` (or nothing forgettable is left). Lines of a long
    /// paste that mention one of the `focus` words (those of the current
    /// question, see [`focus_words`]) are kept with its head and tail.
    pub fn plan(&self, segs: &Segments, live: usize, cells: usize, turn: u32, focus: &[String]) -> Vec<Forget> {
        let target = (self.to as f64 * cells as f64) as usize;
        let mut need = live.saturating_sub(target);
        let mut out: Vec<Forget> = Vec::new();
        let eligible =
            |s: &Segment| !s.pinned && s.kind != SegmentKind::System && s.turn + self.keep_last_turns <= turn;
        for reason in [
            Reason::SupersededReminder,
            Reason::UnappliedHook,
            Reason::StaleFileRead,
            Reason::PassingLog,
            Reason::FinishedThinking,
            Reason::LongPasteMiddle,
            Reason::Oldest,
        ] {
            for s in segs.iter().filter(|s| eligible(s)) {
                if need == 0 {
                    return out;
                }
                for (a, b) in self.candidate(segs, s, reason, turn, focus) {
                    // Parts already forgotten, or already in this plan, are skipped.
                    let planned: Vec<(Pos, Pos)> =
                        out.iter().filter(|f| f.segment == s.id).map(|f| (f.p0, f.p1)).collect();
                    for (p0, p1) in live_parts(s.removed.iter().chain(&planned), a, b) {
                        need = need.saturating_sub((p1 - p0) as usize);
                        out.push(Forget { segment: s.id, p0, p1, reason });
                    }
                }
            }
        }
        out
    }

    /// The spans of `s` to forget for `reason` (none if it does not apply).
    fn candidate(&self, segs: &Segments, s: &Segment, reason: Reason, turn: u32, focus: &[String]) -> Vec<(Pos, Pos)> {
        let whole = vec![(s.p0, s.p1)];
        let newer_same = |same: &dyn Fn(&SegmentKind) -> bool| segs.iter().any(|o| o.p0 > s.p0 && same(&o.kind));
        match (&s.kind, reason) {
            (SegmentKind::SystemReminder { key }, Reason::SupersededReminder)
                if newer_same(&|k| matches!(k, SegmentKind::SystemReminder { key: o } if o == key)) =>
            {
                whole
            }
            (SegmentKind::HookOutput { applied: false }, Reason::UnappliedHook) => whole,
            (SegmentKind::FileRead { path }, Reason::StaleFileRead)
                if s.turn + self.file_read_max_age <= turn
                    || newer_same(&|k| matches!(k, SegmentKind::FileRead { path: o } if o == path)) =>
            {
                whole
            }
            (SegmentKind::CommandOutput { passed: Some(true) }, Reason::PassingLog) if s.len() > self.log_keep_tail => {
                // Keep the last line (the summary), and at least the last `log_keep_tail` tokens.
                let tail = s.p1 - self.log_keep_tail as Pos;
                let last_line = s.lines.iter().rev().find(|l| !l.text.trim().is_empty()).map_or(tail, |l| l.p0);
                vec![(s.p0, tail.min(last_line))]
            }
            (SegmentKind::Thinking, Reason::FinishedThinking) if s.turn < turn => whole,
            // A long paste, or a long tool output not known to pass (a
            // failing run's log, a search): head, tail and the lines the
            // question mentions stay.
            (
                SegmentKind::PastedLog
                | SegmentKind::CommandOutput { passed: None | Some(false) }
                | SegmentKind::SearchResult,
                Reason::LongPasteMiddle,
            ) if s.len() > 3 * self.paste_keep => {
                let (a, b) = (s.p0 + self.paste_keep as Pos, s.p1 - self.paste_keep as Pos);
                let kept: Vec<(Pos, Pos)> =
                    s.lines.iter().filter(|l| mentions(&l.text, focus)).map(|l| (l.p0, l.p1)).collect();
                live_parts(kept.iter(), a, b)
            }
            // The newest copy of a reminder is what the harness says now:
            // it stays even when everything else of its turn goes.
            (SegmentKind::SystemReminder { key }, Reason::Oldest)
                if !newer_same(&|k| matches!(k, SegmentKind::SystemReminder { key: o } if o == key)) =>
            {
                Vec::new()
            }
            (_, Reason::Oldest) => whole,
            _ => Vec::new(),
        }
    }
}

/// Whether `line` contains one of the `words` (case-insensitive).
fn mentions(line: &str, words: &[String]) -> bool {
    !words.is_empty() && {
        let l = line.to_lowercase();
        words.iter().any(|w| l.contains(w.as_str()))
    }
}

/// The words of a question worth looking for in a log: lower-cased runs of
/// letters, digits, `_`, `.` and `:` of four or more characters, minus
/// common English words.
pub fn focus_words(question: &str) -> Vec<String> {
    const COMMON: &[&str] = &[
        "what", "which", "when", "where", "with", "this", "that", "there", "their", "they", "have", "does", "about",
        "from", "into", "your", "please", "could", "would", "should", "tell", "show", "explain", "line", "lines",
        "here", "them", "then", "than", "were", "will", "just", "only", "also", "some", "make",
    ];
    let mut out: Vec<String> = question
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '.' | ':')))
        .map(|w| w.trim_matches(|c: char| matches!(c, '.' | ':')).to_lowercase())
        .filter(|w| w.chars().count() >= 4 && !COMMON.contains(&w.as_str()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The parts of `[a, b)` outside the `gone` ranges (none if it is empty).
fn live_parts<'a>(gone: impl Iterator<Item = &'a (Pos, Pos)>, a: Pos, b: Pos) -> Vec<(Pos, Pos)> {
    let mut parts: Vec<(Pos, Pos)> = if a < b { vec![(a, b)] } else { Vec::new() };
    for &(r0, r1) in gone {
        parts = parts.into_iter().flat_map(|(x, y)| [(x, y.min(r0)), (x.max(r1), y)]).filter(|(x, y)| x < y).collect();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::segments::Line;

    fn session() -> Segments {
        let mut s = Segments::default();
        s.push(SegmentKind::System, 0, 0, 100);
        s.push(SegmentKind::SystemReminder { key: "todo".into() }, 1, 100, 150);
        s.push(SegmentKind::FileRead { path: "src/a.rs".into() }, 1, 150, 650);
        s.push(SegmentKind::CommandOutput { passed: Some(true) }, 2, 650, 1050);
        s.push(SegmentKind::Thinking, 2, 1050, 1250);
        s.push(SegmentKind::SystemReminder { key: "todo".into() }, 3, 1250, 1300);
        s.push(SegmentKind::FileRead { path: "src/a.rs".into() }, 3, 1300, 1800);
        s.push(SegmentKind::PastedLog, 4, 1800, 3000);
        s.push(SegmentKind::User, 6, 3000, 3100);
        s
    }

    #[test]
    fn forgets_by_priority_and_spares_system_pins_and_recent_turns() {
        let segs = session();
        let p = DecachePolicy::default();
        assert!(p.should_decache(3687, 4096) && !p.should_decache(3686, 4096));
        // Need 3100 - 0.7*4096 = 233 tokens: the old reminder (50) and the stale read (500).
        let plan = p.plan(&segs, 3100, 4096, 6, &[]);
        let reasons: Vec<Reason> = plan.iter().map(|f| f.reason).collect();
        assert_eq!(reasons, vec![Reason::SupersededReminder, Reason::StaleFileRead]);
        assert_eq!((plan[0].p0, plan[0].p1), (100, 150), "the older copy goes, the newer stays");
        // A big need walks down the whole order.
        let plan = p.plan(&segs, 4000, 4096, 6, &[]);
        let reasons: Vec<Reason> = plan.iter().map(|f| f.reason).collect();
        assert!(reasons.windows(2).all(|w| w[0] <= w[1]), "priority order: {reasons:?}");
        let log = plan.iter().find(|f| f.reason == Reason::PassingLog).unwrap();
        assert_eq!((log.p0, log.p1), (650, 1050 - 32), "the summary at the end of the log stays");
        let paste = plan.iter().find(|f| f.reason == Reason::LongPasteMiddle).unwrap();
        assert_eq!((paste.p0, paste.p1), (1800 + 128, 3000 - 128));
        assert!(plan.iter().all(|f| f.p0 >= 100), "the system prompt is never forgotten");
        assert!(plan.iter().all(|f| f.p1 <= 3000), "the last turns are never forgotten");
    }

    #[test]
    fn pinned_and_already_removed_parts_are_skipped() {
        let mut segs = session();
        segs.set_pinned(2, true); // the first file read
        segs.mark_removed(3, 650, 850);
        let p = DecachePolicy::default();
        let plan = p.plan(&segs, 4000, 4096, 6, &[]);
        assert!(plan.iter().all(|f| f.segment != 2), "pinned segment forgotten");
        let log: Vec<_> = plan.iter().filter(|f| f.segment == 3).collect();
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].p0, log[0].p1), (850, 1018), "only the part still live");
        assert!(p.plan(&segs, 2000, 4096, 6, &[]).is_empty(), "below the target nothing is forgotten");
        // A huge need reaches the last resort, but never plans a span twice,
        // nor an empty one, and the newest copy of a reminder stays.
        let plan = p.plan(&segs, 100_000, 4096, 6, &[]);
        assert!(plan.iter().any(|f| f.reason == Reason::Oldest));
        assert!(plan.iter().all(|f| f.p0 < f.p1), "an empty span planned: {plan:?}");
        assert!(plan.iter().any(|f| f.segment == 1) && !plan.iter().any(|f| f.segment == 5), "{plan:?}");
        for (i, f) in plan.iter().enumerate() {
            for g in &plan[i + 1..] {
                assert!(f.segment != g.segment || f.p1 <= g.p0 || g.p1 <= f.p0, "{f:?} and {g:?} overlap");
            }
        }
    }

    #[test]
    fn a_paste_keeps_the_lines_the_question_mentions_and_a_log_its_summary_line() {
        let mut segs = Segments::default();
        segs.push(SegmentKind::System, 0, 0, 10);
        let paste = segs.push(SegmentKind::PastedLog, 1, 10, 1010);
        // 100 lines of 10 tokens; line 50 mentions the failing test.
        let lines = (0..100)
            .map(|i| Line {
                p0: 10 + i * 10,
                p1: 20 + i * 10,
                text: if i == 50 { "ERROR parser::tests::nested_brackets panicked".into() } else { format!("ok {i}") },
            })
            .collect();
        segs.set_lines(paste, lines);
        let log = segs.push(SegmentKind::CommandOutput { passed: Some(true) }, 1, 1010, 1210);
        segs.set_lines(
            log,
            vec![
                Line { p0: 1010, p1: 1150, text: "test a ... ok".into() },
                Line {
                    p0: 1150,
                    p1: 1200,
                    text: "test result: ok. 3 passed; 0 failed; 0 ignored; finished in 0.02s".into(),
                },
                Line { p0: 1200, p1: 1210, text: "".into() },
            ],
        );
        segs.push(SegmentKind::User, 4, 1210, 1230);
        let focus = focus_words("Why did nested_brackets fail in the parser?");
        assert!(focus.contains(&"nested_brackets".to_string()) && focus.contains(&"parser".to_string()), "{focus:?}");
        assert!(!focus.iter().any(|w| w == "why" || w == "did"), "{focus:?}");
        let p = DecachePolicy::default();
        let plan = p.plan(&segs, 4000, 4096, 4, &focus);
        let middle: Vec<(Pos, Pos)> =
            plan.iter().filter(|f| f.reason == Reason::LongPasteMiddle).map(|f| (f.p0, f.p1)).collect();
        assert_eq!(middle, vec![(138, 510), (520, 882)], "head, tail and the mentioned line stay");
        let log = plan.iter().find(|f| f.reason == Reason::PassingLog).unwrap();
        assert_eq!((log.p0, log.p1), (1010, 1150), "the whole summary line stays, though longer than the tail");
        // Without a focus the middle goes in one piece.
        let plan = p.plan(&segs, 4000, 4096, 4, &[]);
        let middle: Vec<(Pos, Pos)> =
            plan.iter().filter(|f| f.reason == Reason::LongPasteMiddle).map(|f| (f.p0, f.p1)).collect();
        assert_eq!(middle, vec![(138, 882)]);
    }
}

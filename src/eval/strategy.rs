//! The ways of going on once context has to go, each driving its own
//! session through the same script turn by turn.
use super::script::Script;
use crate::error::{Error, Result};
use crate::kv::Pos;
use crate::sampling::SamplingParams;
use crate::session::{Gap, GenerateOptions, PositionPolicy, Reach, Session};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Nothing is deleted (when it fits).
    Full,
    /// Decache in place, positions kept (gaps stay).
    Keep,
    /// Decache in place, later positions shifted down (keys re-rotated).
    Shift,
    /// `Keep`, then the first tokens after each gap re-evaluated without
    /// the removed span (boundary refresh): this many (`keep+refresh:N`),
    /// as far as the values still change (`keep+refresh:auto`), or
    /// `--refresh`'s (`keep+refresh`).
    KeepRefresh(Option<Reach>),
    /// `Shift`, then the same refresh.
    ShiftRefresh(Option<Reach>),
    /// Re-prefill what stays, without the deleted parts.
    Recompute,
    /// The model summarizes; the conversation restarts from the summary.
    Compaction,
    /// StreamingLLM: the first tokens (sinks) and the newest ones.
    Window,
    /// The model forgets the annotated parts itself with the `forget`
    /// tool (scripted), leaving each part's note: `shift` with `--refresh`'s
    /// refresh, plus the tool call and its answer before the turn.
    ForgetTool,
}

impl Strategy {
    pub const ALL: [Strategy; 9] = [
        Strategy::Full,
        Strategy::Recompute,
        Strategy::Keep,
        Strategy::Shift,
        Strategy::KeepRefresh(None),
        Strategy::ShiftRefresh(None),
        Strategy::Compaction,
        Strategy::Window,
        Strategy::ForgetTool,
    ];

    /// The name without a refresh count.
    pub fn kind(self) -> &'static str {
        match self {
            Strategy::Full => "full",
            Strategy::Keep => "keep",
            Strategy::Shift => "shift",
            Strategy::KeepRefresh(_) => "keep+refresh",
            Strategy::ShiftRefresh(_) => "shift+refresh",
            Strategy::Recompute => "recompute",
            Strategy::Compaction => "compaction",
            Strategy::Window => "window",
            Strategy::ForgetTool => "forget-tool",
        }
    }

    pub fn name(self) -> String {
        match self.refresh() {
            Some(n) => format!("{}:{n}", self.kind()),
            None => self.kind().to_string(),
        }
    }

    /// The refresh reach a refresh strategy names.
    pub fn refresh(self) -> Option<Reach> {
        match self {
            Strategy::KeepRefresh(n) | Strategy::ShiftRefresh(n) => n,
            _ => None,
        }
    }

    /// Whether it deletes in place (and where a refresh then applies).
    pub fn in_place(self) -> bool {
        matches!(
            self,
            Strategy::Keep
                | Strategy::Shift
                | Strategy::KeepRefresh(_)
                | Strategy::ShiftRefresh(_)
                | Strategy::ForgetTool
        )
    }

    /// Whether it closes the gaps it leaves.
    fn shifts(self) -> bool {
        matches!(self, Strategy::Shift | Strategy::ShiftRefresh(_) | Strategy::ForgetTool)
    }

    /// Whether it refreshes after gaps.
    fn refreshes(self) -> bool {
        matches!(self, Strategy::KeepRefresh(_) | Strategy::ShiftRefresh(_) | Strategy::ForgetTool)
    }

    /// Its place in reports: the order of `ALL`, then by refresh count
    /// (`auto` last).
    pub fn rank(self) -> (usize, usize) {
        let kind = Strategy::ALL.iter().position(|s| s.kind() == self.kind()).unwrap_or(0);
        let reach = match self.refresh() {
            None => 0,
            Some(Reach::Tokens(n)) => n,
            Some(Reach::Auto) => usize::MAX,
        };
        (kind, reach)
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let unknown = || format!("unknown strategy '{s}' (one of {})", Strategy::ALL.map(Strategy::name).join(", "));
        let (kind, n) = match s.split_once(':') {
            Some((k, n)) => {
                let n: Reach = n.parse().ok().filter(|&n| n != Reach::Tokens(0)).ok_or_else(|| {
                    format!("strategy '{s}': the refresh after ':' must be a whole number above 0 or auto")
                })?;
                (k, Some(n))
            }
            None => (s, None),
        };
        let base = Strategy::ALL.into_iter().find(|k| k.kind() == kind).ok_or_else(unknown)?;
        match (base, n) {
            (Strategy::KeepRefresh(_), n) => Ok(Strategy::KeepRefresh(n)),
            (Strategy::ShiftRefresh(_), n) => Ok(Strategy::ShiftRefresh(n)),
            (b, None) => Ok(b),
            (b, Some(_)) => {
                Err(format!("strategy '{s}': only keep+refresh and shift+refresh take a count ({} does not)", b.kind()))
            }
        }
    }
}

/// What one turn cost a strategy.
#[derive(Clone, Debug, Default)]
pub struct TurnCost {
    /// Tokens evaluated: the turn's own, plus re-prefills and summaries.
    pub prefilled: usize,
    /// Cells freed before or during the turn.
    pub removed: usize,
    /// Tokens re-evaluated after gaps (boundary refresh; also in `prefilled`).
    pub refreshed: usize,
    /// The conversation was compacted (summary and restart) before this turn.
    pub compacted: bool,
}

pub struct Runner<'a> {
    pub strategy: Strategy,
    session: Session,
    script: &'a Script,
    /// Where each span sits in the cache (keep and shift).
    placed: Vec<Option<(Pos, Pos)>>,
    budget: usize,
    sinks: usize,
    summary_tokens: usize,
    /// How far the refresh strategies re-evaluate after each gap.
    refresh: Reach,
    /// The summaries written (compaction).
    pub summaries: Vec<String>,
}

impl<'a> Runner<'a> {
    pub fn new(
        strategy: Strategy,
        session: Session,
        script: &'a Script,
        budget: usize,
        sinks: usize,
        summary_tokens: usize,
        refresh: Reach,
    ) -> Runner<'a> {
        Runner {
            strategy,
            session,
            script,
            placed: vec![None; script.spans.len()],
            budget,
            sinks,
            summary_tokens,
            refresh,
            summaries: Vec::new(),
        }
    }

    pub fn n_live(&self) -> usize {
        self.session.n_live()
    }

    pub fn pause(&self) {
        self.session.pause_threads();
    }

    /// Run turn `t`: make room the strategy's way, then evaluate the turn's
    /// tokens. Returns the logits of every one of them and the cost.
    pub fn turn(&mut self, t: u32) -> Result<(Vec<f32>, TurnCost)> {
        let mut cost = TurnCost::default();
        let tokens = self.script.turn_tokens(t);
        match self.strategy {
            Strategy::Full => {}
            Strategy::Keep
            | Strategy::Shift
            | Strategy::KeepRefresh(_)
            | Strategy::ShiftRefresh(_)
            | Strategy::ForgetTool => {
                (cost.removed, cost.refreshed) = self.decache(t)?;
                cost.prefilled += cost.refreshed;
            }
            Strategy::Recompute => {
                if self.script.spans.iter().any(|s| s.decached_from == Some(t)) {
                    cost.removed = self.session.n_live();
                    self.session.clear();
                    let keep: Vec<u32> = self
                        .script
                        .spans
                        .iter()
                        .filter(|s| s.turn < t && s.live_at(t))
                        .flat_map(|s| s.tokens.iter().copied())
                        .collect();
                    self.session.eval(&keep, false)?;
                    cost.prefilled += keep.len();
                }
            }
            Strategy::Compaction => {
                if t > 1 && self.session.n_live() + tokens.len() > self.budget {
                    cost.removed = self.session.n_live();
                    cost.prefilled += self.compact()?;
                    cost.compacted = true;
                }
            }
            Strategy::Window => {
                let (logits, removed) = self.window(&tokens)?;
                cost.prefilled += tokens.len();
                cost.removed = removed;
                return Ok((logits, cost));
            }
        }
        let p0 = self.session.next_pos();
        let mut logits = self.session.eval(&tokens, true)?;
        cost.prefilled += tokens.len();
        // The forget exchange opening the turn is evaluated, not compared.
        let extra: usize = self
            .script
            .spans
            .iter()
            .filter(|s| s.turn == t && s.kind == super::forget::KIND)
            .map(|s| s.tokens.len())
            .sum();
        if extra > 0 {
            logits.drain(..extra * (logits.len() / tokens.len().max(1)));
        }
        if self.strategy.in_place() {
            let mut at = p0;
            for (i, s) in self.script.spans.iter().enumerate().filter(|(_, s)| s.turn == t) {
                self.placed[i] = Some((at, at + s.tokens.len() as Pos));
                at += s.tokens.len() as Pos;
            }
        }
        Ok((logits, cost))
    }

    /// Remove the spans annotated as gone from turn `t` in place, latest
    /// first (a shift then never moves a span still to be removed); under
    /// the refresh strategies, then re-evaluate the first tokens after each
    /// gap. Returns the cells removed and the tokens refreshed.
    fn decache(&mut self, t: u32) -> Result<(usize, usize)> {
        let shift = self.strategy.shifts();
        let policy = if shift { PositionPolicy::Shift } else { PositionPolicy::Keep };
        let mut gone: Vec<usize> =
            (0..self.script.spans.len()).filter(|&i| self.script.spans[i].decached_from == Some(t)).collect();
        gone.sort_by_key(|&i| std::cmp::Reverse(self.placed[i].map_or(0, |p| p.0)));
        let mut removed = 0;
        let mut gaps = Vec::new();
        for i in gone {
            let Some((p0, p1)) = self.placed[i].take() else { continue };
            removed += self.session.remove_range(p0, p1, policy.gap())?.cells;
            gaps.push((p0, p1));
            if policy == PositionPolicy::Shift {
                let gap = p1 - p0;
                for (a, b) in self.placed.iter_mut().flatten() {
                    if *a >= p1 {
                        *a -= gap;
                        *b -= gap;
                    }
                }
            }
        }
        if !self.strategy.refreshes() || gaps.is_empty() {
            return Ok((removed, 0));
        }
        // Where each gap ends now: kept gaps end where they did; a closed
        // gap ends where it began, less the gaps closed below it after it.
        let starts: Vec<Pos> = gaps
            .iter()
            .map(|&(p0, p1)| {
                if !shift {
                    return p1;
                }
                p0 - gaps.iter().filter(|&&(a, b)| b <= p0 && a < p0).map(|&(a, b)| b - a).sum::<Pos>()
            })
            .collect();
        let refreshed = self.session.refresh(&starts, self.refresh)?;
        Ok((removed, refreshed.positions.len()))
    }

    /// Ask for a summary of what is cached, then restart from it. Returns
    /// the tokens this evaluated.
    fn compact(&mut self) -> Result<usize> {
        let model = self.session.model().clone();
        let tok = &model.tokenizer;
        let ask = self.script.summary_request(tok).map_err(Error::InvalidArgument)?;
        let opts = GenerateOptions {
            n_predict: Some(self.summary_tokens),
            sampling: SamplingParams::greedy(),
            ignore_eos: false,
            special: false,
            forced: None,
            spec: Default::default(),
        };
        let gen = self.session.generate(&ask, &opts, &mut |_| true)?;
        let restart = self.script.restart(tok, &gen.text).map_err(Error::InvalidArgument)?;
        self.summaries.push(gen.text);
        self.session.clear();
        self.session.eval(&restart, false)?;
        Ok(ask.len() + gen.tokens.len() + restart.len())
    }

    /// Evaluate `tokens` in chunks, each time dropping the oldest tokens
    /// after the sinks so that the cache holds at most the budget.
    fn window(&mut self, tokens: &[u32]) -> Result<(Vec<f32>, usize)> {
        let room = self.budget.saturating_sub(self.sinks).max(2);
        let chunk = (room / 2).max(1);
        let (mut logits, mut removed) = (Vec::new(), 0);
        for c in tokens.chunks(chunk) {
            let over = (self.session.n_live() + c.len()).saturating_sub(self.budget);
            if over > 0 {
                let chain = self.session.live_chain();
                let from = self.sinks.min(chain.len());
                let to = (from + over).min(chain.len());
                if to > from {
                    removed += self.session.remove_range(chain[from].0, chain[to - 1].0 + 1, Gap::Close)?.cells;
                }
            }
            logits.extend(self.session.eval(c, true)?);
        }
        Ok((logits, removed))
    }
}

//! A reply on the terminal as its chat format splits it. A harmony model's
//! (gpt-oss) analysis goes to stderr, dimmed, so that stdout holds only the
//! answer; its calls show there as dim lines (the agent shows calls
//! itself). Other models' text goes out as it comes. The agent's view holds
//! Hermes `<tool_call>` blocks back too.
use crossterm::style::Stylize;
use decache::harmony::{Piece, Splitter};
use decache::toolcall::CallFilter;
use std::io::{Result, Write};

pub struct ReplyView {
    /// The template speaks harmony: the reply is split into its channels.
    harmony: Option<Splitter>,
    /// Hermes calls held back (the agent's view).
    filter: CallFilter,
    /// Show harmony calls as lines (the agent shows its own).
    show_calls: bool,
    /// Text went to stdout.
    pub shown: bool,
    /// Reasoning went to stderr and its line is not ended yet.
    reasoning: bool,
}

impl ReplyView {
    /// `harmony`: split the reply into its channels; `agent`: hold Hermes
    /// calls back and leave calls to the caller.
    pub fn new(harmony: bool, agent: bool) -> ReplyView {
        ReplyView {
            harmony: harmony.then(Splitter::new),
            filter: CallFilter::new(agent),
            show_calls: !agent,
            shown: false,
            reasoning: false,
        }
    }

    /// Show streamed text; an error when stdout is closed.
    pub fn push(&mut self, text: &str) -> Result<()> {
        match &mut self.harmony {
            Some(h) => {
                let pieces = h.push(text);
                self.pieces(pieces)
            }
            None => self.text(text),
        }
    }

    /// The reply ended: what harmony held is shown; the text the call
    /// filter held (it was no call) is returned, not shown.
    pub fn finish(&mut self) -> Result<String> {
        if let Some(h) = &mut self.harmony {
            let pieces = h.finish();
            self.pieces(pieces)?;
        }
        Ok(std::mem::replace(&mut self.filter, CallFilter::new(!self.show_calls)).finish().0)
    }

    fn pieces(&mut self, pieces: Vec<Piece>) -> Result<()> {
        for p in pieces {
            match p {
                Piece::Reasoning(t) => {
                    self.reasoning = true;
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "{}", t.dim()).and_then(|_| err.flush());
                }
                Piece::EndReasoning => self.end_reasoning(),
                Piece::Text(t) => self.text(&t)?,
                Piece::Call(c) if self.show_calls => {
                    eprintln!("{}", format!("[call {} {}]", c.name, c.arguments).dim())
                }
                Piece::Malformed(m) if self.show_calls => eprintln!("{}", format!("[{m}]").dim()),
                Piece::Call(_) | Piece::Malformed(_) => {}
            }
        }
        Ok(())
    }

    fn end_reasoning(&mut self) {
        if std::mem::take(&mut self.reasoning) {
            eprintln!();
        }
    }

    fn text(&mut self, t: &str) -> Result<()> {
        let shown = self.filter.push(t);
        if shown.is_empty() {
            return Ok(());
        }
        self.end_reasoning();
        self.shown = true;
        let mut out = std::io::stdout().lock();
        out.write_all(shown.as_bytes()).and_then(|_| out.flush())
    }
}

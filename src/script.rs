//! Scripted replies for a scripted model (`decache agent --script FILE`,
//! `decache serve --script FILE`): the assistant's replies come from a file
//! instead of being sampled, and still go through the cache token by token.
//!
//! The file holds replies separated by lines holding only `---`. A reply may
//! begin with directive lines, which say which requests it answers:
//!
//! - `@when tools`: a request that offers tools;
//! - `@when no-tools`: a request that offers none (a harness's side
//!   requests: titles, summaries, quota checks);
//! - `@when contains TEXT`: a request whose last message contains TEXT;
//! - `@keep`: the reply is not used up (it answers every such request).
//!
//! A request gets the first remaining reply whose directives all hold; a
//! reply without directives answers any request. Replies are used up in
//! order, so a harness's side requests can be told apart from its main loop
//! without being counted in it.
use std::path::Path;

/// Which requests a reply answers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum When {
    Tools,
    NoTools,
    Contains(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    when: Vec<When>,
    keep: bool,
    pub text: String,
}

/// What a request shows of itself to the script.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cue<'a> {
    /// Tools are offered.
    pub tools: bool,
    /// The text of the request's last message.
    pub last: &'a str,
}

impl Reply {
    fn answers(&self, cue: &Cue) -> bool {
        self.when.iter().all(|w| match w {
            When::Tools => cue.tools,
            When::NoTools => !cue.tools,
            When::Contains(t) => cue.last.contains(t.as_str()),
        })
    }
}

/// The replies of a script, in order.
#[derive(Clone, Debug, Default)]
pub struct ReplyScript {
    replies: Vec<Reply>,
}

/// What a request gets when no reply is left for it.
pub const NO_MORE: &str = "(the script has no more replies)";

impl ReplyScript {
    /// Replies without directives, in order.
    pub fn plain(replies: impl IntoIterator<Item = String>) -> ReplyScript {
        ReplyScript { replies: replies.into_iter().map(|text| Reply { when: Vec::new(), keep: false, text }).collect() }
    }

    /// Read a script; an unknown directive is an error naming its line.
    pub fn parse(text: &str) -> Result<ReplyScript, String> {
        let mut replies = Vec::new();
        let mut cur: Vec<(usize, &str)> = Vec::new();
        let lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        for (n, line) in lines.chain(std::iter::once((0, "---"))) {
            if line.trim_end() != "---" {
                cur.push((n, line));
                continue;
            }
            let block = std::mem::take(&mut cur);
            if n == 0 && block.iter().all(|(_, l)| l.trim().is_empty()) {
                break;
            }
            replies.push(Self::reply(&block)?);
        }
        Ok(ReplyScript { replies })
    }

    fn reply(block: &[(usize, &str)]) -> Result<Reply, String> {
        let mut r = Reply { when: Vec::new(), keep: false, text: String::new() };
        let mut body = block;
        while let Some(((n, line), rest)) = body.split_first() {
            let Some(d) = line.trim().strip_prefix('@') else { break };
            let (word, arg) = d.split_once(' ').map_or((d, ""), |(w, a)| (w, a.trim()));
            match (word, arg.split_once(' ').map_or((arg, ""), |(a, b)| (a, b))) {
                ("keep", ("", _)) => r.keep = true,
                ("when", ("tools", "")) => r.when.push(When::Tools),
                ("when", ("no-tools", "")) => r.when.push(When::NoTools),
                ("when", ("contains", t)) if !t.is_empty() => r.when.push(When::Contains(t.to_string())),
                _ => {
                    return Err(format!(
                    "line {n}: unknown directive '{}' (known: @when tools, @when no-tools, @when contains TEXT, @keep)",
                    line.trim()
                ))
                }
            }
            body = rest;
        }
        r.text = body.iter().map(|(_, l)| *l).collect::<Vec<_>>().join("\n").trim().to_string();
        Ok(r)
    }

    pub fn from_file(path: &Path) -> Result<ReplyScript, crate::Error> {
        let at = |e: String| crate::Error::InvalidArgument(format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
        Self::parse(&text).map_err(at)
    }

    /// The reply for a request with this cue, used up unless `@keep`.
    pub fn next(&mut self, cue: &Cue) -> Option<String> {
        let i = self.replies.iter().position(|r| r.answers(cue))?;
        let r = &self.replies[i];
        if r.keep {
            return Some(r.text.clone());
        }
        Some(self.replies.remove(i).text)
    }

    /// Replies not used up yet (`@keep` ones included).
    pub fn remaining(&self) -> usize {
        self.replies.len()
    }

    pub fn replies(&self) -> impl Iterator<Item = &str> {
        self.replies.iter().map(|r| r.text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split_on_dashes() {
        let s = ReplyScript::parse("one\n---\ntwo\nlines\n---\n").unwrap();
        assert_eq!(s.replies().collect::<Vec<_>>(), ["one", "two\nlines"]);
        let s = ReplyScript::parse("one\n---\n\nlast\n").unwrap();
        assert_eq!(s.replies().collect::<Vec<_>>(), ["one", "last"]);
    }

    #[test]
    fn directives_choose_the_reply() {
        let text = "@when no-tools\n@keep\nA title\n---\n@when tools\nfirst\n---\n@when contains count = 2\nsaw it\n---\nplain";
        let mut s = ReplyScript::parse(text).unwrap();
        let side = Cue { tools: false, last: "summarise" };
        let main = Cue { tools: true, last: "do it" };
        assert_eq!(s.next(&side).as_deref(), Some("A title"));
        assert_eq!(s.next(&main).as_deref(), Some("first"));
        assert_eq!(s.next(&side).as_deref(), Some("A title"), "@keep is not used up");
        assert_eq!(s.next(&main).as_deref(), Some("plain"), "the contains reply waits for its text");
        assert_eq!(s.next(&Cue { tools: true, last: "now count = 2" }).as_deref(), Some("saw it"));
        assert_eq!(s.next(&main), None);
        assert_eq!(s.remaining(), 1);
    }

    #[test]
    fn an_unknown_directive_names_its_line() {
        let e = ReplyScript::parse("ok\n---\n@when sometimes\nx").unwrap_err();
        assert!(e.contains("line 3") && e.contains("@when sometimes"), "{e}");
        assert!(ReplyScript::parse("@keep me\nx").is_err());
        assert!(ReplyScript::parse("@when contains\nx").is_err());
    }
}

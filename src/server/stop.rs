//! Stop strings over streamed text: text is released as soon as it cannot be
//! the start of a stop string; when one appears, the text before it is
//! released and generation ends (the stop string itself is not returned,
//! as in the OpenAI API).
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
    hit: Option<String>,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> StopMatcher {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
            hit: None,
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The stop string that ended generation, if one did.
    pub fn hit(&self) -> Option<&str> {
        self.hit.as_deref()
    }

    /// Add generated text; returns what can be shown now.
    pub fn push(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(text);
        if let Some((at, s)) = self.stops.iter().filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s))).min() {
            self.stopped = true;
            self.hit = Some(s.clone());
            let out = self.held[..at].to_string();
            self.held.clear();
            return out;
        }
        // Hold back the longest tail that is a prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len()).filter(|&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
            .filter(|p| self.held.ends_with(p))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        out
    }

    /// The text still held at the end of generation (no stop string came).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out: Vec<String> = pieces.iter().map(|p| m.push(p)).collect();
        out.push(m.finish());
        (out, m.stopped())
    }

    #[test]
    fn stop_strings_cut_and_prefixes_wait() {
        let (out, stopped) = run(&["\nUser:"], &["Hello", "\n", "Us", "er: hi"]);
        assert_eq!(out, vec!["Hello", "", "", "", ""]);
        assert!(stopped);
        let (out, stopped) = run(&["\nUser:"], &["a", "\n", "b"]);
        assert_eq!(out.concat(), "a\nb");
        assert_eq!(out[1], "", "a newline waits: it may start the stop string");
        assert!(!stopped);
        let (out, _) = run(&[], &["x", "y"]);
        assert_eq!(out, vec!["x", "y", ""]);
        let (out, stopped) = run(&["END", "halt"], &["one two hal", "t three"]);
        assert_eq!(out.concat(), "one two ");
        assert!(stopped);
        let mut m = StopMatcher::new(vec!["END".into(), "halt".into()]);
        m.push("go halt END");
        assert_eq!(m.hit(), Some("halt"), "the first stop string in the text wins");
        let (out, _) = run(&["ü!"], &["aü", "b"]);
        assert_eq!(out, vec!["a", "üb", ""], "held text splits at character boundaries");
    }
}

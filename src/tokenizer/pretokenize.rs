//! Pre-tokenization of byte-level BPE vocabularies, exactly as llama.cpp does
//! it: `tokenizer.ggml.pre` names a list of splitting stages; each stage cuts
//! every fragment left by the previous one into smaller fragments (the text
//! between matches stays a fragment of its own). The fragments are then
//! mapped to GPT-2's byte-level alphabet and handed to the BPE model.
//!
//! The stages reproduce llama.cpp's hand-written matchers for the GPT-2,
//! Llama 3 and Qwen 2 regexes (including their corner cases, e.g. the last
//! whitespace run of a fragment is never shortened), and its `std::regex`
//! fallback for the simple category patterns, with llama.cpp's Unicode 15.1
//! character classes (see [`super::unicode`]).

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::tokenizer::normalizer::Range;
use tokenizers::tokenizer::{NormalizedString, PreTokenizedString, PreTokenizer};

use super::error::TokenizerError;
use super::unicode::{self, LETTER, NUMBER, PUNCTUATION, WHITESPACE};

/// One splitting stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`:
    /// Llama 3 with `max_digits` 3, Qwen 2 with 1.
    Llama3 { max_digits: usize },
    /// `\p{N}`: every number character on its own.
    EachNumber,
    /// `\p{N}+`: runs of number characters.
    NumberRuns,
    /// `[\p{P}\$\+<=>\^~\|]+`: runs of punctuation and these ASCII symbols.
    PunctuationRuns,
    /// `[0-9][0-9][0-9]`: three ASCII digits.
    AsciiDigitTriples,
}

/// What `tokenizer.ggml.pre` implies: splitting stages and tokenizer flags.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PrePreset {
    /// The name, as given (`"default"` when absent).
    pub(crate) name: String,
    pub(crate) stages: &'static [Stage],
    /// A fragment that is itself a token is not merged (Llama 3 style).
    pub(crate) ignore_merges: bool,
    /// Default of `tokenizer.ggml.add_bos_token`.
    pub(crate) add_bos: bool,
    /// The family has no default BOS token.
    pub(crate) no_bos: bool,
    /// Detokenization removes spaces before punctuation (`clean_up_tokenization_spaces`).
    pub(crate) clean_spaces: bool,
    /// `<mask>` swallows the whitespace before it.
    pub(crate) mask_lstrip: bool,
}

const GPT2: &[Stage] = &[Stage::Gpt2];
const DIGITS_GPT2: &[Stage] = &[Stage::EachNumber, Stage::Gpt2];
const LLAMA3: &[Stage] = &[Stage::Llama3 { max_digits: 3 }];
const QWEN2: &[Stage] = &[Stage::Llama3 { max_digits: 1 }];
const DEFAULT: &[Stage] = &[Stage::PunctuationRuns, Stage::Gpt2, Stage::NumberRuns, Stage::AsciiDigitTriples];

/// One accepted group of `tokenizer.ggml.pre` values.
struct Row {
    names: &'static [&'static str],
    stages: &'static [Stage],
    /// A set of the flags below.
    flags: u8,
}

/// A fragment that is a token is not merged.
const IGNORE_MERGES: u8 = 1;
/// `add_bos_token` defaults to true.
const ADD_BOS: u8 = 2;
/// No default BOS token.
const NO_BOS: u8 = 4;
/// Detokenization cleans up spaces.
const CLEAN: u8 = 8;

/// Every accepted `tokenizer.ggml.pre` value, with llama.cpp's stages and flags.
#[rustfmt::skip]
const PRESETS: &[Row] = &[
    Row { names: &["default"], stages: DEFAULT, flags: CLEAN },
    Row {
        names: &["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"],
        stages: LLAMA3,
        flags: IGNORE_MERGES | ADD_BOS | CLEAN,
    },
    Row { names: &["dbrx", "smaug-bpe"], stages: LLAMA3, flags: CLEAN },
    Row { names: &["chatglm-bpe"], stages: LLAMA3, flags: NO_BOS | CLEAN },
    Row { names: &["glm4", "glm5"], stages: LLAMA3, flags: IGNORE_MERGES | NO_BOS | CLEAN },
    Row {
        names: &["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open", "grok-2"],
        stages: QWEN2,
        flags: 0,
    },
    Row { names: &["megrez", "stablelm2"], stages: QWEN2, flags: CLEAN },
    Row { names: &["smollm", "command-r"], stages: DIGITS_GPT2, flags: 0 },
    Row {
        names: &["starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"],
        stages: DIGITS_GPT2,
        flags: CLEAN,
    },
    Row {
        names: &[
            "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
            "modern-bert", "exaone4", "mpt", "olmo", "jais",
        ],
        stages: GPT2,
        flags: CLEAN,
    },
    Row { names: &["trillion", "granite-docling"], stages: GPT2, flags: 0 },
];

impl PrePreset {
    /// The preset for a `tokenizer.ggml.pre` value (`None`: llama.cpp's "default").
    pub(crate) fn from_name(name: Option<&str>) -> Result<PrePreset, TokenizerError> {
        let name = name.unwrap_or("default");
        let row = PRESETS
            .iter()
            .find(|row| row.names.contains(&name))
            .ok_or_else(|| TokenizerError::UnsupportedPre { pre: name.to_string(), supported: supported_names() })?;
        let flag = |f: u8| row.flags & f != 0;
        Ok(PrePreset {
            name: name.to_string(),
            stages: row.stages,
            ignore_merges: flag(IGNORE_MERGES),
            add_bos: flag(ADD_BOS),
            no_bos: flag(NO_BOS),
            clean_spaces: flag(CLEAN),
            mask_lstrip: name.contains("jina-v2-de") || name.contains("jina-v2-es"),
        })
    }
}

/// The accepted `tokenizer.ggml.pre` values, comma-separated.
pub(crate) fn supported_names() -> String {
    PRESETS.iter().flat_map(|row| row.names.iter().copied()).collect::<Vec<_>>().join(", ")
}

/// Splits `text` with `stages`; returns the fragments' byte ranges, in order,
/// covering the whole text.
pub(crate) fn split(text: &str, stages: &[Stage]) -> Vec<(usize, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let flags: Vec<u8> = chars.iter().map(|&c| unicode::flags(c)).collect();
    // Fragment lengths, in characters.
    let mut lens = if chars.is_empty() { Vec::new() } else { vec![chars.len()] };
    for stage in stages {
        let mut out = Vec::with_capacity(lens.len() * 2);
        let mut start = 0;
        for len in lens {
            let frag = Fragment { chars: &chars, flags: &flags, ini: start, end: start + len };
            let mut cut = Cutter { prev: start, out: &mut out };
            frag.split(*stage, &mut cut);
            start += len;
        }
        lens = out;
    }
    // Character lengths to byte ranges.
    let mut ranges = Vec::with_capacity(lens.len());
    let mut byte = 0;
    let mut ci = 0;
    for len in lens {
        let from = byte;
        for c in &chars[ci..ci + len] {
            byte += c.len_utf8();
        }
        ci += len;
        ranges.push((from, byte));
    }
    ranges
}

/// Records fragment ends, dropping empty fragments.
struct Cutter<'o> {
    prev: usize,
    out: &'o mut Vec<usize>,
}

impl Cutter<'_> {
    /// Ends the current fragment at `end` (a character index).
    fn cut(&mut self, end: usize) {
        if end > self.prev {
            self.out.push(end - self.prev);
        }
        self.prev = end;
    }
}

/// The characters `ini..end` of a text, with their classes.
struct Fragment<'t> {
    chars: &'t [char],
    flags: &'t [u8],
    ini: usize,
    end: usize,
}

impl Fragment<'_> {
    /// The character at `pos`, if inside the fragment.
    fn ch(&self, pos: usize) -> Option<char> {
        (pos < self.end).then(|| self.chars[pos])
    }

    /// The class bits at `pos`; 0 outside the fragment.
    fn fl(&self, pos: usize) -> u8 {
        if pos < self.end {
            self.flags[pos]
        } else {
            0
        }
    }

    fn split(&self, stage: Stage, cut: &mut Cutter<'_>) {
        match stage {
            Stage::Gpt2 => self.gpt2(cut),
            Stage::Llama3 { max_digits } => self.llama3(cut, max_digits),
            Stage::EachNumber => self.matches(cut, |f, p| (f.fl(p) & NUMBER != 0).then_some(p + 1)),
            Stage::NumberRuns => self.matches(cut, |f, p| f.run(p, |fl, _| fl & NUMBER != 0)),
            Stage::PunctuationRuns => self.matches(cut, |f, p| f.run(p, is_default_punct)),
            Stage::AsciiDigitTriples => self
                .matches(cut, |f, p| (0..3).all(|k| f.ch(p + k).is_some_and(|c| c.is_ascii_digit())).then_some(p + 3)),
        }
        cut.cut(self.end);
    }

    /// The end of the run of characters satisfying `pred` starting at `pos`,
    /// if the run is not empty.
    fn run(&self, pos: usize, pred: impl Fn(u8, char) -> bool) -> Option<usize> {
        let mut p = pos;
        while let Some(c) = self.ch(p) {
            if !pred(self.flags[p], c) {
                break;
            }
            p += 1;
        }
        (p > pos).then_some(p)
    }

    /// Leftmost-first scan for a pattern: `at(frag, pos)` gives the end of a
    /// match starting at `pos`. Matches and the text between them become
    /// fragments.
    fn matches(&self, cut: &mut Cutter<'_>, at: impl Fn(&Self, usize) -> Option<usize>) {
        let mut pos = self.ini;
        while pos < self.end {
            match at(self, pos) {
                Some(e) => {
                    cut.cut(pos);
                    cut.cut(e);
                    pos = e;
                }
                None => pos += 1,
            }
        }
    }

    /// Is `'` at `pos` followed by a contraction suffix? Returns its end.
    /// `fold` lowercases ASCII letters first (Llama 3's `(?i:...)`).
    fn contraction(&self, pos: usize, fold: bool) -> Option<usize> {
        let norm = |c: char| if fold { c.to_ascii_lowercase() } else { c };
        if self.ch(pos) != Some('\'') {
            return None;
        }
        let next = norm(self.ch(pos + 1)?);
        if matches!(next, 's' | 't' | 'm' | 'd') {
            return Some(pos + 2);
        }
        let next2 = norm(self.ch(pos + 2)?);
        matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')).then_some(pos + 3)
    }

    /// `[^\s\p{L}\p{N}]` inside the fragment.
    fn is_other(&self, pos: usize) -> bool {
        let f = self.fl(pos);
        f != 0 && f & (WHITESPACE | LETTER | NUMBER) == 0
    }

    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    fn gpt2(&self, cut: &mut Cutter<'_>) {
        let mut pos = self.ini;
        while pos < self.end {
            if let Some(e) = self.contraction(pos, false) {
                pos = e;
                cut.cut(pos);
                continue;
            }
            let space = self.chars[pos] == ' ';
            let body = if space { pos + 1 } else { pos };
            let f = self.fl(body);
            if f & LETTER != 0 || f & NUMBER != 0 {
                let class = if f & LETTER != 0 { LETTER } else { NUMBER };
                pos = body;
                while self.fl(pos) & class != 0 {
                    pos += 1;
                }
                cut.cut(pos);
                continue;
            }
            if self.is_other(body) {
                pos = body;
                while self.is_other(pos) {
                    pos += 1;
                }
                cut.cut(pos);
                continue;
            }
            pos = self.whitespace(pos, false);
            cut.cut(pos);
        }
    }

    /// Whitespace alternatives shared by the GPT-2 and Llama 3 matchers:
    /// (`\s*[\r\n]+` when `newlines`), `\s+(?!\S)`, `\s+`; otherwise a single
    /// character. Returns the end of the match.
    fn whitespace(&self, pos: usize, newlines: bool) -> usize {
        let mut n = 0;
        let mut last_newline_end = None;
        while self.fl(pos + n) & WHITESPACE != 0 {
            if newlines && matches!(self.chars[pos + n], '\r' | '\n') {
                last_newline_end = Some(pos + n + 1);
            }
            n += 1;
        }
        if let Some(e) = last_newline_end {
            return e;
        }
        // A run followed by a non-space keeps its last space for the next
        // word; a run that ends the fragment is taken whole.
        if n > 1 && pos + n < self.end {
            return pos + n - 1;
        }
        if n > 0 {
            return pos + n;
        }
        pos + 1
    }

    /// Llama 3 / Qwen 2: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,k}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    fn llama3(&self, cut: &mut Cutter<'_>, max_digits: usize) {
        let mut pos = self.ini;
        while pos < self.end {
            if let Some(e) = self.contraction(pos, true) {
                pos = e;
                cut.cut(pos);
                continue;
            }
            let c = self.chars[pos];
            let f = self.flags[pos];
            if !(c == '\r' || c == '\n' || f & NUMBER != 0) && (f & LETTER != 0 || self.fl(pos + 1) & LETTER != 0) {
                pos += 1;
                while self.fl(pos) & LETTER != 0 {
                    pos += 1;
                }
                cut.cut(pos);
                continue;
            }
            if f & NUMBER != 0 {
                let mut group = pos;
                while self.fl(pos) & NUMBER != 0 {
                    pos += 1;
                    if pos - group >= max_digits {
                        cut.cut(pos);
                        group = pos;
                    }
                }
                cut.cut(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`; a lone trailing space also lands here.
            let body = if c == ' ' { pos + 1 } else { pos };
            if self.fl(body) & (WHITESPACE | LETTER | NUMBER) == 0 {
                pos = body;
                while self.is_other(pos) {
                    pos += 1;
                }
                while matches!(self.ch(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                cut.cut(pos);
                continue;
            }
            pos = self.whitespace(pos, true);
            cut.cut(pos);
        }
    }
}

/// `[\p{P}\$\+<=>\^~\|]` after llama.cpp's category collapsing: ASCII
/// punctuation except the backquote, the listed ASCII symbols, and any
/// non-ASCII punctuation that is not whitespace.
fn is_default_punct(flags: u8, c: char) -> bool {
    if c.is_ascii() {
        matches!(c, '!'..='#' | '%'..='*' | ','..='/' | ':' | ';' | '?' | '@' | '['..=']' | '_' | '{' | '}')
            || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
    } else {
        flags & PUNCTUATION != 0 && flags & WHITESPACE == 0
    }
}

/// The `tokenizers` pre-tokenizer: llama.cpp's splitting stages followed by
/// the byte-level mapping.
pub(crate) struct LlamaPreTokenizer {
    stages: &'static [Stage],
    byte_level: ByteLevel,
}

impl LlamaPreTokenizer {
    pub(crate) fn new(stages: &'static [Stage]) -> Self {
        LlamaPreTokenizer { stages, byte_level: ByteLevel::new(false, false, false) }
    }
}

impl PreTokenizer for LlamaPreTokenizer {
    fn pre_tokenize(&self, pretokenized: &mut PreTokenizedString) -> tokenizers::Result<()> {
        pretokenized.split(|_, normalized: NormalizedString| {
            let pieces: Vec<NormalizedString> = split(normalized.get(), self.stages)
                .into_iter()
                .filter_map(|(a, b)| normalized.slice(Range::Normalized(a..b)))
                .collect();
            Ok(pieces)
        })?;
        self.byte_level.pre_tokenize(pretokenized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces<'a>(text: &'a str, stages: &[Stage]) -> Vec<&'a str> {
        split(text, stages).into_iter().map(|(a, b)| &text[a..b]).collect()
    }

    #[test]
    fn gpt2_words_and_spaces() {
        assert_eq!(pieces("Hello world", GPT2), ["Hello", " world"]);
        assert_eq!(pieces("I'm here", GPT2), ["I", "'m", " here"]);
        assert_eq!(pieces("a   b", GPT2), ["a", "  ", " b"]);
        assert_eq!(pieces("a  ", GPT2), ["a", "  "]);
        assert_eq!(pieces("a\tb", GPT2), ["a", "\t", "b"]);
        assert_eq!(pieces("x = 1;", GPT2), ["x", " =", " 1", ";"]);
        assert_eq!(pieces("", GPT2), Vec::<&str>::new());
    }

    #[test]
    fn smollm_isolates_digits() {
        assert_eq!(pieces("abc 12345", DIGITS_GPT2), ["abc", " ", "1", "2", "3", "4", "5"]);
        assert_eq!(pieces("x  1", DIGITS_GPT2), ["x", "  ", "1"]);
    }

    #[test]
    fn llama3_groups_digits_and_newlines() {
        assert_eq!(pieces("1234567", LLAMA3), ["123", "456", "7"]);
        assert_eq!(pieces("Hello\n\n  world", LLAMA3), ["Hello", "\n\n", " ", " world"]);
        assert_eq!(pieces("HE'LL go", LLAMA3), ["HE", "'LL", " go"]);
        assert_eq!(pieces("x);\n", LLAMA3), ["x", ");\n"]);
        assert_eq!(pieces("1234", QWEN2), ["1", "2", "3", "4"]);
    }

    #[test]
    fn default_stages() {
        assert_eq!(pieces("a+b=1234", DEFAULT), ["a", "+", "b", "=", "123", "4"]);
    }

    #[test]
    fn presets_by_name() {
        assert_eq!(PrePreset::from_name(Some("llama-bpe")).unwrap().stages, LLAMA3);
        assert!(PrePreset::from_name(Some("llama-bpe")).unwrap().ignore_merges);
        assert_eq!(PrePreset::from_name(None).unwrap().name, "default");
        let e = PrePreset::from_name(Some("xyz")).unwrap_err().to_string();
        assert!(e.contains("'xyz'") && e.contains("qwen2"), "{e}");
    }
}

//! Chat templates: the Jinja template a GGUF file carries in
//! `tokenizer.chat_template`, rendered with minijinja the way Hugging Face
//! `apply_chat_template` renders it (`trim_blocks`, `lstrip_blocks`, Python
//! string and dict methods, `raise_exception`, `strftime_now`, a
//! `json.dumps`-style `tojson`).

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{context, Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use super::error::TokenizerError;
use super::Tokenizer;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool` ...
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with this role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// The name the template is registered under (it appears in error messages).
const NAME: &str = "chat_template";

/// ChatML, the fallback when a model file has no template.
const CHATML: &str = "{%- for message in messages -%}\
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/// Gemma's turns (`<start_of_turn>user` / `model`, the system prompt at the
/// head of the first user turn), for Gemma files that carry no template.
/// No BOS: the tokenizer adds it, as Gemma's vocabulary asks.
const GEMMA: &str = "\
{%- if messages and messages[0]['role'] == 'system' -%}\
{%- set first = messages[0]['content'] + '\n\n' -%}{%- set rest = messages[1:] -%}\
{%- else -%}{%- set first = '' -%}{%- set rest = messages -%}{%- endif -%}\
{%- for m in rest -%}\
{{- '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\n' + (first if loop.first else '') + m['content'] + '<end_of_turn>\n' -}}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}";

/// Steps one rendering may take. Real templates take about a hundred per
/// message; a template from a stranger's file that loops without end stops
/// here with an error instead of hanging the program.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    /// The template reads a `tools` variable (found once, when compiled).
    renders_tools: bool,
    /// What the template reads as `bos_token` and `eos_token`: the pieces
    /// of its vocabulary's BOS and EOS tokens (empty until given, see
    /// [`with_vocab`](Self::with_vocab)).
    bos: String,
    eos: String,
}

impl Clone for ChatTemplate {
    fn clone(&self) -> Self {
        // Recompiling a template that compiled once cannot fail.
        ChatTemplate::new(&self.source)
            .unwrap_or_else(|_| ChatTemplate::chatml())
            .with_pieces(self.bos.clone(), self.eos.clone())
    }
}

impl ChatTemplate {
    /// Compiles a Jinja chat template; a syntax error is returned with its line.
    pub fn new(source: &str) -> Result<Self, TokenizerError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_string()).map_err(template_error)?;
        let renders_tools = env.get_template(NAME).is_ok_and(|t| t.undeclared_variables(false).contains("tools"));
        Ok(ChatTemplate { env, source: source.to_string(), renders_tools, bos: String::new(), eos: String::new() })
    }

    /// The template with `tok`'s BOS and EOS pieces (special tokens
    /// rendered as text; empty for one the vocabulary lacks) as `bos_token`
    /// and `eos_token`.
    pub fn with_vocab(self, tok: &Tokenizer) -> Self {
        let piece = |id: Option<u32>| {
            id.map(|i| String::from_utf8_lossy(&tok.token_to_piece(i, true)).into_owned()).unwrap_or_default()
        };
        let (bos, eos) = (piece(tok.bos()), piece(tok.eos()));
        self.with_pieces(bos, eos)
    }

    /// The template with these texts as `bos_token` and `eos_token`.
    pub fn with_pieces(mut self, bos: impl Into<String>, eos: impl Into<String>) -> Self {
        self.bos = bos.into();
        self.eos = eos.into();
        self
    }

    /// The ChatML template (`<|im_start|>role\ncontent<|im_end|>\n`).
    pub fn chatml() -> Self {
        match ChatTemplate::new(CHATML) {
            Ok(t) => t,
            // CHATML is a constant covered by the unit tests.
            Err(e) => unreachable!("the built-in ChatML template does not compile: {e}"),
        }
    }

    /// The format of an architecture's family when its file carries no
    /// template: Gemma's turns for `gemma3`, ChatML otherwise.
    pub fn default_for(arch: &str) -> Self {
        match arch {
            "gemma3" => ChatTemplate::new(GEMMA).unwrap_or_else(|_| ChatTemplate::chatml()),
            _ => ChatTemplate::chatml(),
        }
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation. `add_generation_prompt` appends the opening
    /// of an assistant turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, TokenizerError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// Whether the template renders a `tools` variable itself (Qwen,
    /// Llama 3.1, Hermes and others); if not, tools have to be described in
    /// the system prompt.
    pub fn renders_tools(&self) -> bool {
        self.renders_tools
    }

    /// [`render`](Self::render) with `tools` (OpenAI's shape: `{"type":
    /// "function", "function": {...}}`) given to the template.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.render_messages(messages, tools, add_generation_prompt)
    }

    /// [`render_with_tools`](Self::render_with_tools) with messages given
    /// as JSON objects, for templates that read more of a message than its
    /// role and content (`tool_calls`, `thinking`: see `harmony::template_messages`).
    pub fn render_json(
        &self,
        messages: &[serde_json::Value],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.render_messages(messages, tools, add_generation_prompt)
    }

    fn render_messages<M: Serialize>(
        &self,
        messages: &[M],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        self.render_context(Value::from_serialize(context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        }))
    }

    /// Renders with an arbitrary context (for templates that read more
    /// variables, e.g. `tools`).
    pub fn render_context(&self, ctx: impl Serialize) -> Result<String, TokenizerError> {
        let tmpl = self.env.get_template(NAME).map_err(template_error)?;
        tmpl.render(ctx).map_err(template_error)
    }
}

/// A minijinja error as a one-line message with its line and cause.
fn template_error(e: Error) -> TokenizerError {
    if e.kind() == ErrorKind::OutOfFuel {
        return TokenizerError::Template(format!(
            "the chat template ran too long (more than {TEMPLATE_FUEL} steps for one rendering) and was stopped{}",
            e.line().map_or(String::new(), |l| format!(" at line {l}"))
        ));
    }
    let mut msg = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (line {line})"));
    }
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    TokenizerError::Template(msg)
}

/// `raise_exception(message)`: aborts rendering with the template's message.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {message}")))
}

/// `strftime_now(format)`: the current UTC time, formatted like Python's `strftime`.
pub fn strftime_now(format: String) -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    strftime(&format, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so that leap days end each 400-year era.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of (March-based) year
    let mp = (5 * doy + 2) / 153; // March-based month
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats a Unix time (UTC) with the common `strftime` directives.
fn strftime(format: &str, unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let is_leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[month as usize - 1] + day + u32::from(month > 2 && is_leap(year));
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let no_pad = spec == Some('-');
        if no_pad {
            spec = chars.next();
        }
        let num = |v: i64, width: usize| {
            if no_pad {
                v.to_string()
            } else {
                format!("{v:0width$}")
            }
        };
        match spec {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&num(year.rem_euclid(100), 2)),
            Some('m') => out.push_str(&num(month.into(), 2)),
            Some('d') => out.push_str(&num(day.into(), 2)),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('j') => out.push_str(&num(yday.into(), 3)),
            Some('H') => out.push_str(&num(hour, 2)),
            Some('I') => out.push_str(&num(hour12, 2)),
            Some('M') => out.push_str(&num(minute, 2)),
            Some('S') => out.push_str(&num(second, 2)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('b') | Some('h') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('F') => out.push_str(&format!("{year}-{month:02}-{day:02}")),
            Some('T') => out.push_str(&format!("{hour:02}:{minute:02}:{second:02}")),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `tojson`, as Hugging Face defines it: `json.dumps(value, ensure_ascii=False,
/// indent=indent, separators=separators, sort_keys=sort_keys)`.
fn tojson(value: &Value, args: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = args.get("indent")?;
    let ensure_ascii: Option<bool> = args.get("ensure_ascii")?;
    let sort_keys: Option<bool> = args.get("sort_keys")?;
    let separators: Option<Vec<String>> = args.get("separators")?;
    args.assert_all_used()?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([a, b]) => (a.clone(), b.clone()),
        Some(_) => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be a pair")),
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let writer = JsonWriter {
        indent,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
        item_sep,
        key_sep,
    };
    let mut out = String::new();
    writer.write(value, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

/// Python `json.dumps` formatting of a minijinja value.
struct JsonWriter {
    indent: Option<usize>,
    ensure_ascii: bool,
    sort_keys: bool,
    item_sep: String,
    key_sep: String,
}

impl JsonWriter {
    fn write(&self, v: &Value, depth: usize, out: &mut String) -> Result<(), Error> {
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => {
                if let Ok(f) = f64::try_from(v.clone()) {
                    if v.as_i64().is_none() && f.fract() == 0.0 && f.is_finite() {
                        out.push_str(&format!("{f:.1}"));
                        return Ok(());
                    }
                }
                out.push_str(&v.to_string());
            }
            ValueKind::String => self.string(v.as_str().unwrap_or_default(), out),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.container('[', ']', &items, depth, out, |item, d, o| self.write(item, d, o))?;
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort();
                }
                self.container('{', '}', &keys, depth, out, |key, d, o| {
                    match key.as_str() {
                        Some(s) => self.string(s, o),
                        None => self.string(&key.to_string(), o),
                    }
                    o.push_str(&self.key_sep);
                    self.write(&v.get_item(key)?, d, o)
                })?;
            }
            _ => self.string(&v.to_string(), out),
        }
        Ok(())
    }

    fn container(
        &self,
        open: char,
        close: char,
        items: &[Value],
        depth: usize,
        out: &mut String,
        each: impl Fn(&Value, usize, &mut String) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.push(open);
        if items.is_empty() {
            out.push(close);
            return Ok(());
        }
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            if let Some(n) = self.indent {
                out.push('\n');
                out.push_str(&" ".repeat(n * (depth + 1)));
            }
            each(item, depth + 1, out)?;
        }
        if let Some(n) = self.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
        out.push(close);
        Ok(())
    }

    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0C}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders() {
        let t = ChatTemplate::chatml();
        let out = t.render(&[ChatMessage::new("user", "hi")], true).unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn tools_reach_templates_that_render_them() {
        let native = ChatTemplate::new(
            "{% if tools %}[tools:{% for t in tools %} {{ t.function.name }}{% endfor %}]{% endif %}\
             {% for m in messages %}{{ m.content }}{% endfor %}",
        )
        .unwrap();
        assert!(native.renders_tools() && !ChatTemplate::chatml().renders_tools());
        let tools = [serde_json::json!({"type": "function", "function": {"name": "grep"}})];
        let msgs = [ChatMessage::new("user", "hi")];
        assert_eq!(native.render_with_tools(&msgs, Some(&tools), false).unwrap(), "[tools: grep]hi");
        assert_eq!(native.render(&msgs, false).unwrap(), "hi");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(strftime("%d %b %Y %A %j %H:%M:%S %-d%%", 1_709_210_096), "29 Feb 2024 Thursday 060 12:34:56 29%");
    }

    #[test]
    fn tojson_like_python() {
        let t = ChatTemplate::new("{{ x|tojson }}|{{ x|tojson(indent=2) }}").unwrap();
        let out = t.render_context(context! { x => context! { a => vec![1, 2], b => "é\"<" } }).unwrap();
        assert_eq!(
            out,
            "{\"a\": [1, 2], \"b\": \"é\\\"<\"}|{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": \"é\\\"<\"\n}"
        );
    }

    #[test]
    fn errors_are_messages() {
        let e = ChatTemplate::new("{% for m in messages %}{{ m }").unwrap_err().to_string();
        assert!(e.starts_with("chat template:") && e.contains("syntax error"), "{e}");
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}").unwrap();
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("roles must alternate"), "{e}");
    }

    #[test]
    fn the_template_holds_its_bos_and_eos_pieces() {
        let t = ChatTemplate::new("{{ bos_token }}|{{ eos_token }}").unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "|");
        let t = t.with_pieces("<s>", "</s>");
        assert_eq!(t.clone().render(&[], false).unwrap(), "<s>|</s>", "a clone keeps them");
    }
}

//! OpenAI request bodies as they arrive, and their checks: every problem
//! becomes a 400 naming the field.
use super::error::ApiError;
use crate::sampling::{SamplingParams, RANDOM_SEED};
use crate::session::GenerateOptions;
use crate::tokenizer::ChatMessage;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize, Debug, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

/// Sampling fields shared by chat and text completions.
#[derive(Deserialize, Debug, Default)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    /// llama.cpp's name for max_tokens.
    pub n_predict: Option<i64>,
    pub stop: Option<StopField>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub n: Option<u32>,
}

impl Sampling {
    /// Generation options (the server's defaults `d` where a field is absent) and stop strings.
    pub fn options(&self, d: &SamplingParams) -> Result<(GenerateOptions, Vec<String>), ApiError> {
        let d = d.clone();
        let p = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(d.top_p),
            top_k: self.top_k.unwrap_or(d.top_k),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            seed: match self.seed {
                Some(s) if s >= 0 => s as u64,
                _ => RANDOM_SEED,
            },
            ..d
        };
        p.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::bad_request(format!("n = {n}: only one choice per request is supported")).param("n"));
        }
        let max = self.max_completion_tokens.or(self.max_tokens).or(self.n_predict.filter(|&n| n >= 0));
        if let Some(m) = max.filter(|&m| m < 1) {
            return Err(ApiError::bad_request(format!("max_tokens = {m}: must be at least 1")).param("max_tokens"));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopField::One(s)) => vec![s.clone()],
            Some(StopField::Many(v)) => v.clone(),
        };
        if stop.len() > 16 {
            return Err(ApiError::bad_request(format!("{} stop strings: at most 16", stop.len())).param("stop"));
        }
        let opts = GenerateOptions { n_predict: max.map(|m| m as usize), sampling: p, ..GenerateOptions::default() };
        Ok((opts, stop))
    }
}

#[derive(Deserialize, Debug)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    /// decache's annotation: keep this part out of the cache from now on.
    #[serde(default)]
    pub decache: bool,
    /// decache's annotation for replays: out from this turn on (see
    /// `request_turn`).
    #[serde(default)]
    pub decached_from: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    /// decache's annotation: keep this message out of the cache from now on
    /// (the client goes on sending its full history; the server removes
    /// what it holds of the message in place, as for a history the client
    /// pruned itself).
    #[serde(default)]
    pub decache: bool,
    /// decache's annotation for a request log replayed turn by turn: keep
    /// this message out from this turn on (see `request_turn`); before it,
    /// it is sent and cached as usual.
    #[serde(default)]
    pub decached_from: Option<u32>,
}

pub use crate::eval::requests::{left_out, request_turn};

/// Fields every completion request has.
#[derive(Deserialize, Debug)]
pub struct Common {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl Common {
    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }
}

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub messages: Vec<InMessage>,
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// `false`: at most one call per reply (the first is kept).
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    #[serde(alias = "auto_compaction")]
    pub auto_prune: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub prompt: PromptField,
    #[serde(flatten)]
    pub common: Common,
}

/// Most messages a request may carry.
pub const MAX_MESSAGES: usize = 100_000;

/// A chat request's prompt before rendering: its messages (earlier calls
/// as text) and the tools it offers, in OpenAI's shape (`{"type":
/// "function", "function": {...}}`), empty when none are active.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatPrompt {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<Value>,
}

/// Check offered tools (each needs a function name) and put them in
/// OpenAI's shape (Anthropic's `{name, description, input_schema}` too).
pub fn check_tools(tools: &[Value]) -> Result<Vec<Value>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let f = t.get("function").unwrap_or(t);
            if !f.get("name").is_some_and(Value::is_string) {
                return Err(ApiError::bad_request(format!("tools[{i}]: needs a function name")).param("tools"));
            }
            Ok(match t.get("function") {
                Some(f) => serde_json::json!({"type": "function", "function": f}),
                None => {
                    let mut f = serde_json::json!({"name": t["name"], "description": t.get("description").unwrap_or(&Value::Null)});
                    f["parameters"] = t.get("input_schema").or_else(|| t.get("parameters")).cloned().unwrap_or(serde_json::json!({}));
                    serde_json::json!({"type": "function", "function": f})
                }
            })
        })
        .collect()
}

/// The note that stands in for an image, audio or file this model cannot read.
pub fn unreadable(what: &str) -> String {
    format!("[{what} omitted: this model reads text only]")
}

/// What `tool_choice` asks of the reply, in either API's spelling: OpenAI's
/// `"auto"`, `"none"`, `"required"`, `{"type": "function", "function":
/// {"name"}}`; Anthropic's `{"type": "auto" | "any" | "none" | "tool", "name"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ToolChoice {
    #[default]
    Auto,
    /// No tools are offered.
    None,
    /// Some call is required.
    Any,
    /// A call of this tool is required.
    Tool(String),
}

impl ToolChoice {
    /// OpenAI's `tool_choice`; a wrong type or an unknown value is a 400
    /// naming the field.
    pub fn from_openai(v: Option<&Value>) -> Result<ToolChoice, ApiError> {
        let bad = |m: String, p: &str| Err(ApiError::bad_request(format!("{p}: {m}")).param(p));
        match v {
            None | Some(Value::Null) => Ok(ToolChoice::Auto),
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Ok(ToolChoice::Auto),
                "none" => Ok(ToolChoice::None),
                "required" => Ok(ToolChoice::Any),
                o => bad(format!("unknown value '{o}' (auto, none, required or a function)"), "tool_choice"),
            },
            Some(Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
                Some("function") => match o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
                    Some(n) => Ok(ToolChoice::Tool(n.to_string())),
                    None => bad("a function choice needs function.name (a string)".into(), "tool_choice.function.name"),
                },
                Some(t) => bad(format!("unknown type '{t}' (function)"), "tool_choice.type"),
                None => bad("needs a type (function)".into(), "tool_choice.type"),
            },
            Some(_) => bad("expected a string or an object".into(), "tool_choice"),
        }
    }

    /// Whether a call is required.
    pub fn requires_call(&self) -> bool {
        matches!(self, ToolChoice::Any | ToolChoice::Tool(_))
    }

    /// Check that a named tool is among the offered (OpenAI-shaped) ones.
    pub fn check_offered(&self, offered: &[Value], param: &str) -> Result<(), ApiError> {
        if let ToolChoice::Tool(name) = self {
            let known = offered.iter().any(|t| t["function"]["name"].as_str() == Some(name.as_str()));
            if !known {
                return Err(ApiError::bad_request(format!("{param}: no tool named '{name}' is offered")).param(param));
            }
        } else if self.requires_call() && offered.is_empty() {
            return Err(ApiError::bad_request("tool_choice: a tool call is required but no tools are offered")
                .param("tool_choice"));
        }
        Ok(())
    }

    /// The sentence that tells the model a call is required, if one is.
    pub fn instruction(&self) -> Option<String> {
        match self {
            ToolChoice::Any => Some("(Reply with a tool call now: call one of the offered tools.)".into()),
            ToolChoice::Tool(n) => Some(format!("(Reply with a tool call now: call the tool `{n}`.)")),
            ToolChoice::Auto | ToolChoice::None => None,
        }
    }

    /// Append the instruction to the last message, the one being
    /// answered (not to an assistant turn being continued): the prefix
    /// the cache holds stays as it was.
    pub fn instruct(&self, msgs: &mut [ChatMessage]) {
        if let (Some(text), Some(last)) = (self.instruction(), msgs.last_mut()) {
            if last.role != "assistant" {
                last.content = format!("{}\n\n{text}", last.content);
            }
        }
    }
}

/// What a reply's calls must be: `choice`, and at most one call when
/// `single` (OpenAI's `parallel_tool_calls: false`, Anthropic's
/// `disable_parallel_tool_use`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallRule {
    pub choice: ToolChoice,
    pub single: bool,
}

impl CallRule {
    /// The reply's calls under the rule: beyond the first dropped when
    /// `single`. A required call the model did not make (or a call of
    /// another tool than the one named) is logged; the reply stands.
    pub fn apply(&self, mut calls: Vec<super::tools::ToolCall>, api: &str) -> Vec<super::tools::ToolCall> {
        match &self.choice {
            ToolChoice::Any if calls.is_empty() => {
                tracing::warn!(api, "tool_choice required a tool call; the model answered without one")
            }
            ToolChoice::Tool(n) if !calls.iter().any(|c| &c.name == n) => {
                tracing::warn!(api, tool = %n, calls = calls.len(), "tool_choice named a tool; the model did not call it")
            }
            _ => {}
        }
        if self.single && calls.len() > 1 {
            tracing::info!(api, dropped = calls.len() - 1, "one call per reply was asked for; the first is kept");
            calls.truncate(1);
        }
        calls
    }
}

impl ChatRequest {
    /// Whether this request allows auto-pruning: not turned off by
    /// `chat_template_kwargs.enable_auto_prune` (or `.auto_prune`, or the
    /// older spellings `enable_auto_compaction` and `auto_compaction`) or a
    /// top-level `auto_prune` (`auto_compaction`) set to false.
    pub fn auto_prune(&self) -> bool {
        let kw = self.chat_template_kwargs.as_ref();
        let off = |v: Option<&Value>| v.and_then(Value::as_bool) == Some(false);
        let names = ["enable_auto_prune", "auto_prune", "enable_auto_compaction", "auto_compaction"];
        !(names.iter().any(|n| off(kw.and_then(|k| k.get(*n)))) || self.auto_prune == Some(false))
    }

    /// Whether the model may call the offered tools (`tool_choice` is not "none").
    pub fn tools_active(&self) -> bool {
        self.tools.as_ref().is_some_and(|t| !t.is_empty())
            && self.tool_choice.as_ref().and_then(Value::as_str) != Some("none")
    }

    /// What the reply's calls must be (`tool_choice`, `parallel_tool_calls`).
    pub fn call_rule(&self) -> Result<CallRule, ApiError> {
        Ok(CallRule {
            choice: ToolChoice::from_openai(self.tool_choice.as_ref())?,
            single: self.parallel_tool_calls == Some(false),
        })
    }

    /// The messages as the chat template takes them, after the checks,
    /// earlier calls as text, with the tools offered.
    pub fn chat_prompt(&self) -> Result<ChatPrompt, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_request("messages is empty: a chat needs at least one message").param("messages"));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(ApiError::bad_request(format!("{} messages: at most {MAX_MESSAGES}", self.messages.len()))
                .param("messages"));
        }
        let mut out = Vec::with_capacity(self.messages.len());
        let turn = request_turn(self.messages.iter().map(|m| m.role.as_str()));
        let out_part = |p: &ContentPart| left_out(p.decache, p.decached_from, turn);
        for (i, m) in self.messages.iter().enumerate() {
            let at = |field: &str| format!("messages[{i}].{field}");
            let all_decached = matches!(&m.content, Some(Content::Parts(p)) if !p.is_empty() && p.iter().all(out_part));
            if left_out(m.decache, m.decached_from, turn) || all_decached {
                continue;
            }
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                return Err(ApiError::bad_request(format!(
                    "{}: unknown role '{}' (system, developer, user, assistant or tool)",
                    at("role"),
                    m.role
                ))
                .param(&at("role")));
            }
            let text = match &m.content {
                None if m.role == "assistant" && m.tool_calls.is_some() => String::new(),
                None => return Err(ApiError::bad_request(format!("{}: missing", at("content"))).param(&at("content"))),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    // Images, audio and files: a note where they stood (this
                    // model reads text only); a message made only of them is
                    // refused, naming the first.
                    let mut s = String::new();
                    let mut unread = None;
                    for (j, p) in parts.iter().enumerate().filter(|(_, p)| !out_part(p)) {
                        let part = || format!("{}[{j}]", at("content"));
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => s.push_str(t),
                            ("text", None) => {
                                return Err(ApiError::bad_request(format!("{}: a text part needs `text`", part()))
                                    .param(&part()))
                            }
                            (k @ ("image_url" | "input_audio" | "file"), _) => {
                                unread.get_or_insert((j, k));
                                let what = match k {
                                    "image_url" => "image",
                                    "input_audio" => "audio",
                                    _ => "file",
                                };
                                s.push_str(&unreadable(what));
                            }
                            (k, _) => {
                                return Err(ApiError::bad_request(format!(
                                    "{}: content parts of type '{k}' are not supported (text only)",
                                    part()
                                ))
                                .param(&part()))
                            }
                        }
                    }
                    if let Some((j, k)) = unread.filter(|_| m.role != "tool" && parts.iter().all(|p| p.kind != "text"))
                    {
                        let part = format!("{}[{j}]", at("content"));
                        return Err(ApiError::bad_request(format!(
                            "{part}: content parts of type '{k}' are not supported: this model reads text only \
                             (send text; inside a tool message such a part becomes a note)"
                        ))
                        .param(&part));
                    }
                    s
                }
            };
            let mut text = text;
            if let Some(calls) = &m.tool_calls {
                let calls = super::tools::from_openai(calls)
                    .map_err(|e| ApiError::bad_request(format!("messages[{i}].{e}")))?;
                let sep = if text.is_empty() { "" } else { "\n" };
                text = format!("{text}{sep}{}", super::tools::render_calls(&calls));
            }
            let role = if m.role == "developer" { "system" } else { m.role.as_str() };
            out.push(ChatMessage::new(role, text));
        }
        if out.is_empty() {
            return Err(ApiError::bad_request(
                "every message is annotated \"decache\": true (or decached from this turn on); nothing is left to answer",
            )
            .param("messages"));
        }
        let tools =
            if self.tools_active() { check_tools(self.tools.as_deref().unwrap_or_default())? } else { Vec::new() };
        let rule = self.call_rule()?;
        rule.choice.check_offered(&tools, "tool_choice.function.name")?;
        rule.choice.instruct(&mut out);
        Ok(ChatPrompt { messages: out, tools })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tools_of_either_api_come_out_in_openais_shape() {
        let openai = json!({"type": "function", "function": {"name": "grep", "parameters": {"type": "object"}}});
        let anthropic = json!({"name": "read", "description": "Read a file", "input_schema": {"type": "object"}});
        let out = check_tools(&[openai.clone(), anthropic]).unwrap();
        assert_eq!(out[0], openai);
        assert_eq!(
            out[1],
            json!({"type": "function", "function": {"name": "read", "description": "Read a file", "parameters": {"type": "object"}}})
        );
        let e = check_tools(&[json!({"function": {"description": "no name"}})]).unwrap_err();
        assert!(e.message.contains("tools[0]"), "{e:?}");
    }

    fn chat(v: serde_json::Value) -> Result<ChatPrompt, ApiError> {
        serde_json::from_value::<ChatRequest>(v).unwrap().chat_prompt()
    }

    #[test]
    fn decached_from_leaves_out_from_its_turn_on() {
        // A replayed log: the same annotated history, one more turn each time.
        let history = [
            json!({"role": "user", "content": "read the log", "decached_from": 3}),
            json!({"role": "assistant", "content": "read it"}),
            json!({"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "paste", "decached_from": 2}]}),
            json!({"role": "assistant", "content": "ok"}),
            json!({"role": "user", "content": "and now?"}),
        ];
        let texts = |n: usize| -> Vec<String> {
            chat(json!({"messages": history[..n]})).unwrap().messages.into_iter().map(|m| m.content).collect()
        };
        assert_eq!(texts(1), ["read the log"], "turn 1");
        assert_eq!(texts(3), ["read the log", "read it", "a "], "turn 2: the paste is out");
        assert_eq!(texts(5), ["read it", "a ", "ok", "and now?"], "turn 3: the first message too");
        assert_eq!(request_turn(["system", "user", "assistant", "tool", "tool"].into_iter()), 2);
        let e = serde_json::from_value::<ChatRequest>(
            json!({"messages": [{"role": "user", "content": "x", "decached_from": "soon"}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }

    #[test]
    fn messages_and_parts_annotated_decache_are_left_out() {
        let p = chat(json!({"messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "a long log", "decache": true},
            {"role": "assistant", "content": "noted"},
            {"role": "user", "content": [{"type": "text", "text": "keep "}, {"type": "text", "text": "drop", "decache": true}, {"type": "text", "text": "this"}]},
            {"role": "user", "content": [{"type": "text", "text": "gone", "decache": true}]}
        ]}))
        .unwrap();
        let texts: Vec<&str> = p.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["sys", "noted", "keep this"]);
        let e = chat(json!({"messages": [{"role": "user", "content": "x", "decache": true}]})).unwrap_err();
        assert!(e.message.contains("nothing is left to answer"), "{}", e.message);
    }

    #[test]
    fn images_audio_and_files_become_notes_or_a_400_naming_the_part() {
        let image = json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}});
        let p = chat(json!({"messages": [
            {"role": "user", "content": "Look at the screenshot."},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "shot", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "c1", "content": [image]},
            {"role": "user", "content": [{"type": "text", "text": "And this? "}, {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}
        ]}))
        .unwrap();
        assert_eq!(p.messages[2].content, unreadable("image"));
        assert_eq!(p.messages[3].content, format!("And this? {}", unreadable("audio")));
        let e = chat(json!({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]}))
            .unwrap_err();
        assert!(
            e.message.starts_with("messages[1].content[0]: content parts of type 'file' are not supported"),
            "{e:?}"
        );
        assert_eq!(e.param.as_deref(), Some("messages[1].content[0]"));
    }

    #[test]
    fn tool_choice_required_or_named_is_asked_for_and_checked() {
        let tools = json!([{"type": "function", "function": {"name": "grep", "parameters": {}}}]);
        let with = |choice: serde_json::Value| {
            chat(
                json!({"messages": [{"role": "user", "content": "Find TODOs."}], "tools": tools, "tool_choice": choice}),
            )
        };
        assert!(with(json!("required")).unwrap().messages[0].content.ends_with("call one of the offered tools.)"));
        let named = with(json!({"type": "function", "function": {"name": "grep"}})).unwrap();
        assert!(named.messages[0].content.ends_with("call the tool `grep`.)"));
        assert_eq!(with(json!("auto")).unwrap().messages[0].content, "Find TODOs.");
        assert!(with(json!("none")).unwrap().tools.is_empty());
        for (choice, at) in [
            (json!("sometimes"), "tool_choice"),
            (json!({"type": "function", "function": {"name": "nope"}}), "tool_choice.function.name"),
            (json!({"type": "function"}), "tool_choice.function.name"),
            (json!({"type": "custom"}), "tool_choice.type"),
            (json!(3), "tool_choice"),
        ] {
            let e = with(choice.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(at), "{choice}: {e:?}");
        }
        let e = chat(json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"})).unwrap_err();
        assert!(e.message.contains("no tools are offered"), "{e:?}");
        let single = serde_json::from_value::<ChatRequest>(json!({"messages": [], "parallel_tool_calls": false}))
            .unwrap()
            .call_rule()
            .unwrap();
        assert!(single.single);
    }
}

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
}

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
#[derive(Clone, Debug, Default)]
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
        for (i, m) in self.messages.iter().enumerate() {
            let at = |field: &str| format!("messages[{i}].{field}");
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
                    let mut s = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => s.push_str(t),
                            ("text", None) => {
                                return Err(ApiError::bad_request(format!(
                                    "{}[{j}]: a text part needs `text`",
                                    at("content")
                                )))
                            }
                            (k, _) => {
                                return Err(ApiError::bad_request(format!(
                                    "{}[{j}]: content parts of type '{k}' are not supported (text only)",
                                    at("content")
                                )))
                            }
                        }
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
        let tools =
            if self.tools_active() { check_tools(self.tools.as_deref().unwrap_or_default())? } else { Vec::new() };
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
}

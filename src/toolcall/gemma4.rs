//! Gemma 4's tool calls: `<|tool_call>call:NAME{key:value,…}<tool_call|>`,
//! one after another for parallel calls. Values are written as the chat
//! template writes them: strings between `<|"|>` marks (no escaping),
//! numbers, `true`/`false`, `null` (or Python's `None`, which the template
//! renders for a null), lists `[a,b]` and objects `{key:value}` whose keys
//! are not quoted.
use super::ToolCall;
use serde_json::{Map, Number, Value};

pub const OPEN: &str = "<|tool_call>";
pub const CLOSE: &str = "<tool_call|>";
const QUOTE: &str = "<|\"|>";

/// The call in the text between `<|tool_call>` and `<tool_call|>`.
pub fn call(body: &str) -> Result<ToolCall, String> {
    let b = body.trim();
    let rest =
        b.strip_prefix("call:").ok_or_else(|| format!("expected call:NAME{{…}}, found {}", super::cut(b, 40)))?;
    let brace = rest.find('{').ok_or("call:NAME is not followed by {arguments}")?;
    let name = rest[..brace].trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("'{}' is not a tool name", super::cut(name, 40)));
    }
    let mut p = Parser { s: &rest[brace..], at: 0 };
    let args = p.value().map_err(|e| format!("call:{name}: {e}"))?;
    p.skip_ws();
    if p.at != p.s.len() {
        return Err(format!("call:{name}: text after the arguments: {}", super::cut(&p.s[p.at..], 40)));
    }
    match args {
        Value::Object(_) => Ok(ToolCall { name: name.to_string(), arguments: args }),
        _ => Err(format!("call:{name}: the arguments are not an object")),
    }
}

struct Parser<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }

    fn skip_ws(&mut self) {
        let t = self.rest();
        self.at += t.len() - t.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.rest().starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_ws();
        let r = self.rest();
        if let Some(s) = r.strip_prefix(QUOTE) {
            let end = s.find(QUOTE).ok_or("a string is not closed by <|\"|>")?;
            self.at += QUOTE.len() + end + QUOTE.len();
            return Ok(Value::String(s[..end].to_string()));
        }
        if self.eat('{') {
            let mut m = Map::new();
            if self.eat('}') {
                return Ok(Value::Object(m));
            }
            loop {
                self.skip_ws();
                let colon = self.rest().find(':').ok_or("a key is not followed by ':'")?;
                let key = self.rest()[..colon].trim().to_string();
                if key.is_empty() || key.contains(['{', '}', ',', '[', ']']) {
                    return Err(format!("'{}' is not a key", super::cut(&key, 40)));
                }
                self.at += colon + 1;
                let v = self.value()?;
                if m.insert(key.clone(), v).is_some() {
                    return Err(format!("key '{key}' is given twice"));
                }
                if self.eat('}') {
                    return Ok(Value::Object(m));
                }
                if !self.eat(',') {
                    return Err(format!("expected ',' or '}}' after '{key}'"));
                }
            }
        }
        if self.eat('[') {
            let mut v = Vec::new();
            if self.eat(']') {
                return Ok(Value::Array(v));
            }
            loop {
                v.push(self.value()?);
                if self.eat(']') {
                    return Ok(Value::Array(v));
                }
                if !self.eat(',') {
                    return Err("expected ',' or ']' in a list".into());
                }
            }
        }
        // A bare word: a number, a boolean or a null, up to the next delimiter.
        let end = r.find([',', '}', ']']).unwrap_or(r.len());
        let word = r[..end].trim();
        self.at += end;
        match word {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            "null" | "None" => Ok(Value::Null),
            _ => match serde_json::from_str::<Number>(word) {
                Ok(n) => Ok(Value::Number(n)),
                Err(_) => Err(format!("'{}' is not a value (strings go between <|\"|> marks)", super::cut(word, 40))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_read_as_the_template_writes_them() {
        let c = call("call:get_weather{city:<|\"|>Paris, \"FR\"<|\"|>,days:2,flags:[true,None],opts:{deep:{x:-1.5}}}")
            .unwrap();
        assert_eq!(c.name, "get_weather");
        assert_eq!(
            c.arguments,
            json!({"city": "Paris, \"FR\"", "days": 2, "flags": [true, null], "opts": {"deep": {"x": -1.5}}})
        );
        assert_eq!(call("call:ls{}").unwrap().arguments, json!({}));
    }

    #[test]
    fn broken_calls_are_named() {
        for (body, says) in [
            ("get_weather{}", "expected call:NAME"),
            ("call:ls", "not followed by {arguments}"),
            ("call:ls{path:<|\"|>src}", "not closed"),
            ("call:ls{path:src}", "not a value"),
            ("call:ls{a:1,a:2}", "given twice"),
            ("call:ls{a:1} more", "text after the arguments"),
            ("call:ls{a:1", "expected ',' or '}'"),
        ] {
            let e = call(body).unwrap_err();
            assert!(e.contains(says), "{body:?}: {e}");
        }
    }
}

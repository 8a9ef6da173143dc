//! The XML form of a tool call that Qwen3.5 and Qwen3-Coder write inside
//! `<tool_call>`:
//!
//! ```text
//! <function=NAME>
//! <parameter=P>
//! value
//! </parameter>
//! </function>
//! ```
//!
//! A value is taken as JSON when it reads as JSON (a number, `true`, an
//! object...), else as the string it is, with the one newline after the
//! opening tag and before the closing tag removed (the templates put them
//! there).
use super::ToolCall;
use serde_json::{Map, Value};

const FUNCTION: &str = "<function=";
const FUNCTION_END: &str = "</function>";
const PARAM: &str = "<parameter=";
const PARAM_END: &str = "</parameter>";

/// Whether a `<tool_call>` body is in this form.
pub fn is_xml(body: &str) -> bool {
    body.trim_start().starts_with(FUNCTION)
}

/// The call in `body`, or what is wrong with it.
pub fn call(body: &str) -> Result<ToolCall, String> {
    let b = body.trim();
    let rest = b.strip_prefix(FUNCTION).ok_or("it does not start with <function=NAME>")?;
    let close = rest.find('>').ok_or("<function= is not closed by '>'")?;
    let name = rest[..close].trim();
    if name.is_empty() {
        return Err("<function=> names no function".into());
    }
    let mut inner = &rest[close + 1..];
    match inner.rfind(FUNCTION_END) {
        Some(end) => inner = &inner[..end],
        None => return Err(format!("<function={name}> is not closed by {FUNCTION_END}")),
    }
    let mut args = Map::new();
    loop {
        let t = inner.trim_start();
        if t.is_empty() {
            break;
        }
        let p = t
            .strip_prefix(PARAM)
            .ok_or_else(|| format!("<function={name}>: expected <parameter=NAME>, found {}", super::cut(t, 40)))?;
        let close = p.find('>').ok_or_else(|| format!("<function={name}>: <parameter= is not closed by '>'"))?;
        let key = p[..close].trim();
        let after = &p[close + 1..];
        let end = after
            .find(PARAM_END)
            .ok_or_else(|| format!("<function={name}>: <parameter={key}> is not closed by {PARAM_END}"))?;
        let raw = &after[..end];
        let raw = raw.strip_prefix('\n').unwrap_or(raw);
        let raw = raw.strip_suffix('\n').unwrap_or(raw);
        if key.is_empty() || args.contains_key(key) {
            return Err(format!("<function={name}>: parameter '{key}' is empty or given twice"));
        }
        args.insert(key.to_string(), value(raw));
        inner = &after[end + PARAM_END.len()..];
    }
    Ok(ToolCall { name: name.to_string(), arguments: Value::Object(args) })
}

fn value(raw: &str) -> Value {
    let t = raw.trim();
    let json_like = t.starts_with(['{', '[', '"', '-'])
        || t.starts_with(|c: char| c.is_ascii_digit())
        || matches!(t, "true" | "false" | "null");
    match serde_json::from_str::<Value>(t) {
        Ok(v) if json_like => v,
        _ => Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_become_arguments_typed_as_they_read() {
        let c = call(
            "\n<function=edit>\n<parameter=path>\nsrc/main.rs\n</parameter>\n<parameter=line>\n12\n</parameter>\n\
             <parameter=body>\nfn main() {\n    x();\n}\n</parameter>\n<parameter=opts>\n{\"dry\": true}\n</parameter>\n\
             </function>\n",
        )
        .unwrap();
        assert_eq!(c.name, "edit");
        assert_eq!(
            c.arguments,
            json!({"path": "src/main.rs", "line": 12, "body": "fn main() {\n    x();\n}", "opts": {"dry": true}})
        );
        assert_eq!(call("<function=ls>\n</function>").unwrap().arguments, json!({}));
    }

    #[test]
    fn broken_forms_are_named() {
        for (body, says) in [
            ("<function=ls", "not closed by '>'"),
            ("<function=ls>", "not closed by </function>"),
            ("<function=>\n</function>", "names no function"),
            ("<function=ls>\n<parameter=a>\n1\n</function>", "<parameter=a> is not closed"),
            ("<function=ls>\nhello\n</function>", "expected <parameter=NAME>"),
            ("<function=ls>\n<parameter=a>1</parameter><parameter=a>2</parameter>\n</function>", "given twice"),
        ] {
            let e = call(body).unwrap_err();
            assert!(e.contains(says), "{body:?}: {e}");
        }
    }
}

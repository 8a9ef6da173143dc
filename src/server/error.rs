//! API errors with the body each dialect's clients expect: OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` and Anthropic's
//! `{"type": "error", "error": {"type", "message"}}`.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `code` (e.g. `context_length_exceeded`).
    pub code: Option<&'static str>,
    pub param: Option<String>,
    /// OpenAI's `type` when it is not the one the status implies (the
    /// Responses API answers an unknown `previous_response_id` with 404
    /// `invalid_request_error`).
    pub kind: Option<&'static str>,
    /// Extra fields for the error object (`n_prompt_tokens`, `n_ctx`);
    /// few, so a list keeps the error small.
    pub extra: Vec<(String, serde_json::Value)>,
    pub dialect: Dialect,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            code: None,
            param: None,
            kind: None,
            extra: Default::default(),
            dialect: Dialect::OpenAi,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn param(mut self, p: &str) -> ApiError {
        self.param = Some(p.to_string());
        self
    }

    pub fn code(mut self, c: &'static str) -> ApiError {
        self.code = Some(c);
        self
    }

    pub fn error_type(mut self, t: &'static str) -> ApiError {
        self.kind = Some(t);
        self
    }

    pub fn with(mut self, key: &str, v: impl Into<serde_json::Value>) -> ApiError {
        self.extra.retain(|(k, _)| k != key);
        self.extra.push((key.to_string(), v.into()));
        self
    }

    pub fn dialect(mut self, d: Dialect) -> ApiError {
        self.dialect = d;
        self
    }

    fn openai_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            413 => "invalid_request_error",
            429 | 503 => "unavailable_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }

    fn anthropic_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }

    pub fn body(&self) -> serde_json::Value {
        match self.dialect {
            Dialect::OpenAi => {
                let kind = self.kind.unwrap_or(self.openai_type());
                let mut e = json!({"message": self.message, "type": kind, "param": self.param, "code": self.code});
                if let Some(o) = e.as_object_mut() {
                    o.extend(self.extra.iter().cloned());
                }
                json!({ "error": e })
            }
            Dialect::Anthropic => {
                json!({"type": "error", "error": {"type": self.anthropic_type(), "message": self.message}})
            }
        }
    }
}

impl From<&crate::Error> for ApiError {
    /// An engine failure, answered by its class: a context that cannot
    /// hold the request is the client's to fix (400
    /// `context_length_exceeded`), so is what this model cannot do (422
    /// `unsupported`); memory is 507 `out_of_memory`; a device or backend
    /// that is not there is 503; only faults of the program are 500.
    fn from(e: &crate::Error) -> ApiError {
        use crate::error::ErrorClass;
        let (status, code) = match e.class() {
            ErrorClass::ContextFull => (StatusCode::BAD_REQUEST, Some("context_length_exceeded")),
            ErrorClass::InvalidInput => (StatusCode::BAD_REQUEST, None),
            ErrorClass::Unsupported => (StatusCode::UNPROCESSABLE_ENTITY, Some("unsupported")),
            ErrorClass::OutOfMemory => (StatusCode::INSUFFICIENT_STORAGE, Some("out_of_memory")),
            ErrorClass::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
            ErrorClass::Internal => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        let err = ApiError::new(status, e.to_string());
        match code {
            Some(c) => err.code(c),
            None => err,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvError;
    use crate::Error;

    /// Every class of engine failure, as both dialects answer it.
    #[test]
    fn each_failure_class_gets_its_status_and_error_type() {
        let io = || std::io::Error::other("refused");
        let cases: Vec<(Error, u16, &str, Option<&str>, &str)> = vec![
            (
                Error::Kv(KvError::Full { live: 10, size: 16, need: 8 }),
                400,
                "invalid_request_error",
                Some("context_length_exceeded"),
                "invalid_request_error",
            ),
            (
                Error::PromptTooLong { tokens: 300, n_ctx: 256 },
                400,
                "invalid_request_error",
                Some("context_length_exceeded"),
                "invalid_request_error",
            ),
            (
                Error::NothingToForget { live: 250, need: 10, n_ctx: 256 },
                400,
                "invalid_request_error",
                Some("context_length_exceeded"),
                "invalid_request_error",
            ),
            (
                Error::InvalidArgument("token 3 has id 99999".into()),
                400,
                "invalid_request_error",
                None,
                "invalid_request_error",
            ),
            (
                Error::Kv(KvError::PositionRange("token positions would overflow 32 bits".into())),
                400,
                "invalid_request_error",
                None,
                "invalid_request_error",
            ),
            (
                Error::Kv(KvError::WindowDropped { query: 900, pos: 300, pool: 768 }),
                422,
                "invalid_request_error",
                Some("unsupported"),
                "invalid_request_error",
            ),
            (
                Error::Unsupported("the chat template is not append-only".into()),
                422,
                "invalid_request_error",
                Some("unsupported"),
                "invalid_request_error",
            ),
            (
                Error::Kv(KvError::OutOfMemory { cells: 1 << 20, need_mib: 90_000, avail_mib: 20_000 }),
                507,
                "server_error",
                Some("out_of_memory"),
                "api_error",
            ),
            (Error::Compute(crate::ggml::ComputeError::Alloc), 507, "server_error", Some("out_of_memory"), "api_error"),
            (Error::Backend("RPC0".into()), 503, "unavailable_error", None, "overloaded_error"),
            (Error::Compute(crate::ggml::ComputeError::Status(-1)), 500, "server_error", None, "api_error"),
            (
                Error::System { what: "cannot start a slot thread".into(), source: io() },
                500,
                "server_error",
                None,
                "api_error",
            ),
            (Error::Internal("expected 10 logits, got 0".into()), 500, "server_error", None, "api_error"),
        ];
        for (e, status, openai_type, code, anthropic_type) in cases {
            let msg = e.to_string();
            let o = ApiError::from(&e);
            assert_eq!(o.status.as_u16(), status, "{msg}");
            let b = o.body();
            assert_eq!(b["error"]["type"], openai_type, "{msg}");
            assert_eq!(b["error"]["code"].as_str(), code, "{msg}");
            assert_eq!(b["error"]["message"], msg);
            let a = ApiError::from(&e).dialect(Dialect::Anthropic).body();
            assert_eq!(
                (a["type"].as_str(), a["error"]["type"].as_str()),
                (Some("error"), Some(anthropic_type)),
                "{msg}"
            );
            assert_eq!(a["error"]["message"], msg);
        }
    }
}

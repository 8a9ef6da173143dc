//! The HTTP client settings shared by metadata look-ups and downloads.

use std::time::Duration;

use ureq::Agent;

use super::error::{PullError, Result};

/// Largest JSON document accepted from a metadata endpoint.
const MAX_JSON_BYTES: u64 = 16 << 20;

/// An agent that reports every HTTP status as a response (callers decide),
/// asks for uncompressed bodies (byte ranges must refer to the file itself),
/// and gives up on a silent peer instead of hanging.
pub(crate) fn agent() -> Agent {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .accept_encoding("identity")
        .user_agent(concat!("decache/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .tls_config(super::tls::tls_config())
        .build();
    Agent::new_with_config(config)
}

/// GETs `url` and parses its body as JSON into `T`; `describe` turns a
/// parse failure into the caller's error.
pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
    agent: &Agent,
    url: &str,
    describe: impl FnOnce(String) -> PullError,
) -> Result<T> {
    let mut resp = agent.get(url).call().map_err(|e| PullError::Http { url: url.to_string(), source: Box::new(e) })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(PullError::HttpStatus { url: url.to_string(), status });
    }
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_JSON_BYTES)
        .read_to_vec()
        .map_err(|e| PullError::Interrupted { url: url.to_string(), done: 0, total: None, reason: e.to_string() })?;
    serde_json::from_slice(&bytes).map_err(|e| describe(e.to_string()))
}

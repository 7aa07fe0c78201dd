//! The OpenAI-compatible request bodies: parsed and checked here, by plain functions of the
//! body bytes (fuzzed: `fuzz/fuzz_targets/serve_request.rs`), into a [`GenRequest`] or an
//! [`ApiError`] that names the offending field. Unknown fields are ignored, as OpenAI's own
//! clients send many; fields that would change the output and are not implemented
//! (`n > 1`, non-zero `presence_penalty`, `logprobs`...) are refused rather than ignored.

use crunch_generate::{Message, SamplingParams};
use serde_json::{json, Map, Value};

/// The two generation endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Completion,
    Chat,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    Text(String),
    Messages(Vec<Message>),
}

/// A checked request.
#[derive(Clone, Debug, PartialEq)]
pub struct GenRequest {
    pub kind: Kind,
    pub prompt: Prompt,
    pub model: Option<String>,
    /// `None`: the server's default.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the token counts.
    pub stream_usage: bool,
}

/// What the server accepts.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens: usize,
    /// Most chat messages, most stop strings, longest stop string (bytes).
    pub max_messages: usize,
    pub max_stop: usize,
    pub max_stop_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tokens: 4096,
            max_messages: 1024,
            max_stop: 4,
            max_stop_len: 256,
        }
    }
}

/// An error as OpenAI's API returns them: an HTTP status and
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub param: Option<String>,
    pub code: &'static str,
}

impl ApiError {
    /// `param` has a value of the wrong JSON type; `want` says which type it needs.
    fn wrong_type(param: &str, want: &str, got: &Value) -> Self {
        Self::bad(
            param,
            format!("`{param}` must be {want}, got {}", type_name(got)),
        )
    }

    fn required(param: &str) -> Self {
        Self::bad(param, format!("`{param}` is required"))
    }

    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            param: Some(param.to_string()),
            code: "invalid_value",
        }
    }

    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code,
        }
    }

    pub fn body(&self) -> Value {
        let kind = match self.status {
            503 => "server_error",
            s if s >= 500 => "server_error",
            404 if self.code == "model_not_found" => "invalid_request_error",
            _ => "invalid_request_error",
        };
        json!({"error": {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

fn number(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(ApiError::wrong_type(key, "a number", other)),
    }
}

fn integer(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad(
                key,
                format!("`{key}` must be a non-negative integer, got {n}"),
            )
        }),
        Some(other) => Err(ApiError::wrong_type(key, "an integer", other)),
    }
}

fn boolean(obj: &Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::wrong_type(key, "true or false", other)),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A message's content: a string, or an array of `{"type": "text", "text": ...}` parts.
fn content(v: &Value, at: usize) -> Result<String, ApiError> {
    let param = format!("messages[{at}].content");
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    _ => {
                        return Err(ApiError::bad(
                            &param,
                            "content parts must be {\"type\": \"text\", \"text\": ...}",
                        ))
                    }
                }
            }
            Ok(out)
        }
        other => Err(ApiError::wrong_type(&param, "a string", other)),
    }
}

fn messages(obj: &Map<String, Value>, limits: &Limits) -> Result<Vec<Message>, ApiError> {
    let list = match obj.get("messages") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(ApiError::required("messages")),
        Some(other) => return Err(ApiError::wrong_type("messages", "an array", other)),
    };
    if list.is_empty() {
        return Err(ApiError::bad("messages", "`messages` must not be empty"));
    }
    if list.len() > limits.max_messages {
        return Err(ApiError::bad(
            "messages",
            format!("at most {} messages", limits.max_messages),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let m = m.as_object().ok_or_else(|| {
                ApiError::bad(&format!("messages[{i}]"), "each message must be an object")
            })?;
            let role = match m.get("role") {
                Some(Value::String(r))
                    if ["system", "user", "assistant", "developer", "tool"]
                        .contains(&r.as_str()) =>
                {
                    r.clone()
                }
                Some(Value::String(r)) => {
                    return Err(ApiError::bad(
                        &format!("messages[{i}].role"),
                        format!("unknown role `{r}`"),
                    ))
                }
                _ => {
                    return Err(ApiError::bad(
                        &format!("messages[{i}].role"),
                        "each message needs a string `role`",
                    ))
                }
            };
            let text = match m.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(v) => content(v, i)?,
            };
            // "developer" is OpenAI's newer name for the system role.
            let role = if role == "developer" {
                "system".into()
            } else {
                role
            };
            Ok(Message {
                role,
                content: text,
            })
        })
        .collect()
}

fn stop(obj: &Map<String, Value>, limits: &Limits) -> Result<Vec<String>, ApiError> {
    let list = match obj.get("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad("stop", "`stop` must be a string or an array of strings")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::wrong_type(
                "stop",
                "a string or an array of strings",
                other,
            ))
        }
    };
    if list.len() > limits.max_stop {
        return Err(ApiError::bad(
            "stop",
            format!("at most {} stop strings", limits.max_stop),
        ));
    }
    if let Some(s) = list.iter().find(|s| s.len() > limits.max_stop_len) {
        return Err(ApiError::bad(
            "stop",
            format!(
                "stop strings are at most {} bytes, one has {}",
                limits.max_stop_len,
                s.len()
            ),
        ));
    }
    Ok(list)
}

/// Parses and checks a request body for `kind`.
pub fn parse(kind: Kind, body: &[u8], limits: &Limits) -> Result<GenRequest, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError {
        status: 400,
        message: format!("the body is not valid JSON: {e}"),
        param: None,
        code: "invalid_json",
    })?;
    let obj = v.as_object().ok_or_else(|| {
        ApiError::new(
            400,
            "invalid_json",
            format!("the body must be a JSON object, got {}", type_name(&v)),
        )
    })?;
    let prompt = match kind {
        Kind::Chat => Prompt::Messages(messages(obj, limits)?),
        Kind::Completion => match obj.get("prompt") {
            Some(Value::String(s)) => Prompt::Text(s.clone()),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                Prompt::Text(a[0].as_str().unwrap_or_default().to_string())
            }
            Some(Value::Array(_)) => {
                return Err(ApiError::bad(
                    "prompt",
                    "one prompt per request: a string (or an array of one string)",
                ))
            }
            None | Some(Value::Null) => return Err(ApiError::required("prompt")),
            Some(other) => return Err(ApiError::wrong_type("prompt", "a string", other)),
        },
    };
    if let Prompt::Text(t) = &prompt {
        if t.is_empty() {
            return Err(ApiError::bad("prompt", "`prompt` must not be empty"));
        }
    }
    let model = match obj.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(ApiError::wrong_type("model", "a string", other)),
    };
    let max_tokens = match integer(obj, "max_completion_tokens")?.or(integer(obj, "max_tokens")?) {
        None => None,
        Some(0) => {
            return Err(ApiError::bad(
                "max_tokens",
                "`max_tokens` must be at least 1",
            ))
        }
        Some(n) if n > limits.max_tokens as u64 => {
            return Err(ApiError::bad(
                "max_tokens",
                format!(
                    "`max_tokens` is at most {} on this server, got {n}",
                    limits.max_tokens
                ),
            ))
        }
        Some(n) => Some(n as usize),
    };
    if let Some(n) = integer(obj, "n")? {
        if n != 1 {
            return Err(ApiError::bad("n", "only n = 1 is supported"));
        }
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if let Some(v) = number(obj, key)? {
            if v != 0.0 {
                return Err(ApiError::bad(
                    key,
                    format!("`{key}` is not supported (use repetition_penalty)"),
                ));
            }
        }
    }
    if boolean(obj, "logprobs")? || integer(obj, "top_logprobs")?.is_some_and(|n| n > 0) {
        return Err(ApiError::bad(
            "logprobs",
            "log-probabilities are not supported",
        ));
    }
    let temperature = number(obj, "temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad(
            "temperature",
            format!("`temperature` must be in [0, 2], got {temperature}"),
        ));
    }
    let sampling = SamplingParams {
        temperature: temperature as f32,
        top_k: integer(obj, "top_k")?.unwrap_or(0).min(u32::MAX as u64) as usize,
        top_p: number(obj, "top_p")?.unwrap_or(1.0) as f32,
        min_p: number(obj, "min_p")?.unwrap_or(0.0) as f32,
        repetition_penalty: number(obj, "repetition_penalty")?.unwrap_or(1.0) as f32,
        seed: match obj.get("seed") {
            None | Some(Value::Null) => 0,
            // OpenAI's seed is any 64-bit integer.
            Some(Value::Number(n)) => n
                .as_u64()
                .or(n.as_i64().map(|i| i as u64))
                .ok_or_else(|| ApiError::bad("seed", "`seed` must be an integer"))?,
            Some(other) => return Err(ApiError::wrong_type("seed", "an integer", other)),
        },
    };
    sampling.validate().map_err(|e| {
        let param = ["top_p", "min_p", "repetition_penalty", "temperature"]
            .into_iter()
            .find(|p| e.starts_with(p))
            .unwrap_or("sampling");
        ApiError::bad(param, e)
    })?;
    let stream = boolean(obj, "stream")?;
    let stream_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => boolean(o, "include_usage")?,
        Some(_) => {
            return Err(ApiError::bad(
                "stream_options",
                "`stream_options` must be an object",
            ))
        }
    };
    Ok(GenRequest {
        kind,
        prompt,
        model,
        max_tokens,
        sampling,
        stop: stop(obj, limits)?,
        stream,
        stream_usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = r#"{"model": "m", "prompt": "Hi", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "stop": ["a", "b"], "stream": true, "seed": 3}"#;

    proptest! {
        /// Any bytes, and any small corruption of a valid body: a request or a 4xx error,
        /// never a panic (the fuzz target explores further).
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                        at in 0usize..GOOD.len(), with in any::<u8>(), cut in 0usize..GOOD.len()) {
            let mut mutated = GOOD.as_bytes().to_vec();
            mutated[at] = with;
            for body in [&bytes[..], &mutated[..], &GOOD.as_bytes()[..cut]] {
                for kind in [Kind::Completion, Kind::Chat] {
                    if let Err(e) = parse(kind, body, &Limits::default()) {
                        prop_assert!((400..500).contains(&e.status));
                    }
                }
            }
        }
    }

    fn p(kind: Kind, body: &str) -> Result<GenRequest, ApiError> {
        parse(kind, body.as_bytes(), &Limits::default())
    }

    #[test]
    fn good_requests() {
        let r = p(Kind::Completion, r#"{"prompt": "Hi", "max_tokens": 5, "temperature": 0, "stop": ["x"], "stream": true, "user": "ignored"}"#).unwrap();
        assert_eq!(r.prompt, Prompt::Text("Hi".into()));
        assert_eq!(r.max_tokens, Some(5));
        assert!(r.stream);
        assert_eq!(r.stop, vec!["x"]);
        let r = p(Kind::Chat, r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}], "seed": -3}"#).unwrap();
        assert_eq!(r.prompt, Prompt::Messages(vec![Message::new("user", "ab")]));
        assert_eq!(r.sampling.temperature, 1.0);
        assert_eq!(r.model.as_deref(), Some("m"));
    }

    #[test]
    fn bad_requests_name_the_field() {
        use Kind::{Chat, Completion};
        // (kind, body, the field the error names; None: the body is not JSON)
        #[rustfmt::skip]
        let cases = [
            (Completion, "not json", None),
            (Completion, "[1, 2]", None),
            (Completion, "{}", Some("prompt")),
            (Completion, r#"{"prompt": 3}"#, Some("prompt")),
            (Completion, r#"{"prompt": ""}"#, Some("prompt")),
            (Completion, r#"{"prompt": "a", "max_tokens": "5"}"#, Some("max_tokens")),
            (Completion, r#"{"prompt": "a", "max_tokens": 0}"#, Some("max_tokens")),
            (Completion, r#"{"prompt": "a", "max_tokens": 100000000}"#, Some("max_tokens")),
            (Completion, r#"{"prompt": "a", "max_tokens": -1}"#, Some("max_tokens")),
            (Completion, r#"{"prompt": "a", "temperature": 9}"#, Some("temperature")),
            (Completion, r#"{"prompt": "a", "top_p": 0}"#, Some("top_p")),
            (Completion, r#"{"prompt": "a", "stream": "yes"}"#, Some("stream")),
            (Completion, r#"{"prompt": "a", "stop": [1]}"#, Some("stop")),
            (Completion, r#"{"prompt": "a", "n": 2}"#, Some("n")),
            (Chat, r#"{"messages": []}"#, Some("messages")),
            (Chat, r#"{"messages": "hi"}"#, Some("messages")),
            (Chat, r#"{"messages": [{"role": "wizard", "content": "x"}]}"#, Some("messages[0].role")),
            (Chat, r#"{"messages": [{"role": "user", "content": 5}]}"#, Some("messages[0].content")),
        ];
        for (kind, body, param) in cases {
            let code = if param.is_some() {
                "invalid_value"
            } else {
                "invalid_json"
            };
            let e = p(kind, body).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.code, code, "{body}: {}", e.message);
            assert_eq!(e.param.as_deref(), param, "{body}: {}", e.message);
        }
    }
}

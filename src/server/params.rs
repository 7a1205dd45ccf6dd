//! Parsing and validation of request bodies. Every problem is a 400 naming the field and value;
//! nothing here panics on any input.

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::engine::SamplingSpec;
use crate::tokenizer::chat_template::ChatMessage;

/// Most stop strings per request.
pub const MAX_STOP: usize = 16;
/// Most alternatives reported per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Fields shared by completions and chat completions.
#[derive(Debug, Clone)]
pub struct CommonParams {
    /// The `model` field, if given.
    pub model: Option<String>,
    /// max_tokens / max_completion_tokens, if given.
    pub max_tokens: Option<usize>,
    /// Sampling settings.
    pub sampling: SamplingSpec,
    /// Stop strings.
    pub stop: Vec<String>,
    /// SSE streaming.
    pub stream: bool,
    /// stream_options.include_usage.
    pub include_usage: bool,
    /// Top log-probs wanted (`None`: no log-probs).
    pub logprobs: Option<usize>,
    /// `ignore_eos` (vLLM / llama-server extension): generate past end-of-generation tokens.
    pub ignore_eos: bool,
}

/// A prompt as the request gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// One or more texts.
    Texts(Vec<String>),
    /// One or more token-id sequences.
    Tokens(Vec<Vec<u32>>),
}

/// A parsed `/v1/completions` body.
#[derive(Debug, Clone)]
pub struct CompletionParams {
    /// Shared fields.
    pub common: CommonParams,
    /// The prompt(s).
    pub prompt: PromptInput,
}

/// A parsed `/v1/chat/completions` body.
#[derive(Debug, Clone)]
pub struct ChatParams {
    /// Shared fields.
    pub common: CommonParams,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Append the assistant header (default true).
    pub add_generation_prompt: bool,
}

/// Parses a body into a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("", format!("request body is not valid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad(
            "",
            format!(
                "request body must be a JSON object, got {}",
                type_name(&other)
            ),
        )),
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

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        let mut cut = 60;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

fn present<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    o.get(k).filter(|v| !v.is_null())
}

/// An optional number in `[lo, hi]`.
pub fn opt_f32(o: &Map<String, Value>, k: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
    let Some(v) = present(o, k) else {
        return Ok(None);
    };
    let x = v
        .as_f64()
        .ok_or_else(|| ApiError::bad(k, format!("{k} must be a number, got {}", short(v))))?;
    if !x.is_finite() || x < lo || x > hi {
        return Err(ApiError::bad(
            k,
            format!("{k} = {x} must be between {lo} and {hi}"),
        ));
    }
    Ok(Some(x as f32))
}

/// An optional integer in `[lo, hi]`.
pub fn opt_int(o: &Map<String, Value>, k: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    let Some(v) = present(o, k) else {
        return Ok(None);
    };
    let x = v
        .as_i64()
        .ok_or_else(|| ApiError::bad(k, format!("{k} must be an integer, got {}", short(v))))?;
    if x < lo || x > hi {
        return Err(ApiError::bad(
            k,
            format!("{k} = {x} must be between {lo} and {hi}"),
        ));
    }
    Ok(Some(x))
}

/// An optional boolean.
pub fn opt_bool(o: &Map<String, Value>, k: &str) -> Result<Option<bool>, ApiError> {
    match present(o, k) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::bad(
            k,
            format!("{k} must be a boolean, got {}", short(v)),
        )),
    }
}

/// An optional string.
pub fn opt_str(o: &Map<String, Value>, k: &str) -> Result<Option<String>, ApiError> {
    match present(o, k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ApiError::bad(
            k,
            format!("{k} must be a string, got {}", short(v)),
        )),
    }
}

fn parse_stop(o: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stops = match present(o, "stop") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                v => Err(ApiError::bad(
                    "stop",
                    format!("stop must hold strings, got {}", short(v)),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(ApiError::bad(
                "stop",
                format!(
                    "stop must be a string or an array of strings, got {}",
                    short(v)
                ),
            ))
        }
    };
    if stops.len() > MAX_STOP {
        return Err(ApiError::bad(
            "stop",
            format!(
                "stop has {} strings, at most {MAX_STOP} are allowed",
                stops.len()
            ),
        ));
    }
    Ok(stops)
}

fn reject_unsupported(o: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(n) = opt_int(o, "n", i64::MIN, i64::MAX)? {
        if n != 1 {
            return Err(ApiError::bad(
                "n",
                format!("n = {n}: only n = 1 is supported"),
            ));
        }
    }
    if let Some(b) = opt_int(o, "best_of", i64::MIN, i64::MAX)? {
        if b != 1 {
            return Err(ApiError::bad(
                "best_of",
                format!("best_of = {b}: only 1 is supported"),
            ));
        }
    }
    if opt_bool(o, "echo")? == Some(true) {
        return Err(ApiError::bad("echo", "echo = true is not supported"));
    }
    if let Some(s) = opt_str(o, "suffix")? {
        if !s.is_empty() {
            return Err(ApiError::bad("suffix", "suffix is not supported"));
        }
    }
    match present(o, "logit_bias") {
        None => {}
        Some(Value::Object(m)) if m.is_empty() => {}
        Some(_) => return Err(ApiError::bad("logit_bias", "logit_bias is not supported")),
    }
    if let Some(t) = present(o, "tools") {
        if t.as_array().is_none_or(|a| !a.is_empty()) {
            return Err(ApiError::bad("tools", "tools are not supported"));
        }
    }
    if let Some(rf) = present(o, "response_format") {
        let ty = rf.get("type").and_then(Value::as_str);
        if ty != Some("text") {
            return Err(ApiError::bad(
                "response_format",
                format!(
                    "response_format {} is not supported (only type text)",
                    short(rf)
                ),
            ));
        }
    }
    opt_str(o, "user")?;
    Ok(())
}

fn parse_common(o: &Map<String, Value>, chat: bool) -> Result<CommonParams, ApiError> {
    reject_unsupported(o)?;
    let model = opt_str(o, "model")?;
    let mt = opt_int(o, "max_tokens", 1, u32::MAX as i64)?;
    let mct = opt_int(o, "max_completion_tokens", 1, u32::MAX as i64)?;
    let max_tokens = mct.or(mt).map(|x| x as usize);
    let d = SamplingSpec::default();
    let top_k = opt_int(o, "top_k", -1, u32::MAX as i64)?.map_or(d.top_k, |k| k.max(0) as u32);
    let sampling = SamplingSpec {
        temperature: opt_f32(o, "temperature", 0.0, 100.0)?.unwrap_or(d.temperature),
        top_k,
        top_p: opt_f32(o, "top_p", 0.0, 1.0)?.unwrap_or(d.top_p),
        min_p: opt_f32(o, "min_p", 0.0, 1.0)?.unwrap_or(d.min_p),
        repeat_penalty: opt_f32(o, "repetition_penalty", 0.01, 100.0)?.unwrap_or(d.repeat_penalty),
        presence_penalty: opt_f32(o, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        frequency_penalty: opt_f32(o, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        penalty_last_n: d.penalty_last_n,
        seed: opt_int(o, "seed", i64::MIN, i64::MAX)?.map(|s| s as u64),
    };
    if sampling.top_p == 0.0 {
        return Err(ApiError::bad("top_p", "top_p = 0 must be greater than 0"));
    }
    crate::engine::sampling::validate(&sampling)?;
    let stream = opt_bool(o, "stream")?.unwrap_or(false);
    let include_usage = match present(o, "stream_options") {
        None => false,
        Some(Value::Object(so)) => {
            if !stream {
                return Err(ApiError::bad(
                    "stream_options",
                    "stream_options is only allowed when stream is true",
                ));
            }
            opt_bool(so, "include_usage")?.unwrap_or(false)
        }
        Some(v) => {
            return Err(ApiError::bad(
                "stream_options",
                format!("stream_options must be an object, got {}", short(v)),
            ))
        }
    };
    let logprobs = if chat {
        let lp = opt_bool(o, "logprobs")?.unwrap_or(false);
        let top = opt_int(o, "top_logprobs", 0, MAX_TOP_LOGPROBS as i64)?;
        if top.is_some() && !lp {
            return Err(ApiError::bad(
                "top_logprobs",
                "top_logprobs requires logprobs = true",
            ));
        }
        lp.then_some(top.unwrap_or(0) as usize)
    } else {
        opt_int(o, "logprobs", 0, MAX_TOP_LOGPROBS as i64)?.map(|x| x as usize)
    };
    Ok(CommonParams {
        model,
        max_tokens,
        sampling,
        stop: parse_stop(o)?,
        stream,
        include_usage,
        logprobs,
        ignore_eos: opt_bool(o, "ignore_eos")?.unwrap_or(false),
    })
}

fn token_ids(a: &[Value], n_vocab: usize) -> Result<Vec<u32>, ApiError> {
    a.iter()
        .map(|v| match v.as_u64() {
            Some(t) if (t as usize) < n_vocab => Ok(t as u32),
            _ => Err(ApiError::bad(
                "prompt",
                format!(
                    "prompt token {} is not a token id below the vocabulary size {n_vocab}",
                    short(v)
                ),
            )),
        })
        .collect()
}

/// Parses a completions body.
pub fn parse_completion(
    o: &Map<String, Value>,
    n_vocab: usize,
) -> Result<CompletionParams, ApiError> {
    let common = parse_common(o, false)?;
    let bad_type = |v: &Value| {
        ApiError::bad(
            "prompt",
            format!(
                "prompt must be a string, an array of strings, an array of token ids or an array of such arrays, got {}",
                short(v)
            ),
        )
    };
    let prompt = match present(o, "prompt") {
        None => return Err(ApiError::bad("prompt", "prompt is required")),
        Some(Value::String(s)) => PromptInput::Texts(vec![s.clone()]),
        Some(v @ Value::Array(a)) => {
            if a.is_empty() {
                return Err(ApiError::bad("prompt", "prompt is an empty array"));
            }
            if a.iter().all(Value::is_string) {
                PromptInput::Texts(
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect(),
                )
            } else if a.iter().all(Value::is_number) {
                PromptInput::Tokens(vec![token_ids(a, n_vocab)?])
            } else if a.iter().all(Value::is_array) {
                let mut seqs = Vec::new();
                for x in a {
                    let inner = x.as_array().ok_or_else(|| bad_type(v))?;
                    if !inner.iter().all(Value::is_number) || inner.is_empty() {
                        return Err(bad_type(v));
                    }
                    seqs.push(token_ids(inner, n_vocab)?);
                }
                PromptInput::Tokens(seqs)
            } else {
                return Err(bad_type(v));
            }
        }
        Some(v) => return Err(bad_type(v)),
    };
    Ok(CompletionParams { common, prompt })
}

fn message_content(m: &Map<String, Value>, i: usize) -> Result<String, ApiError> {
    let field = format!("messages[{i}].content");
    match m.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for p in parts {
                let ty = p.get("type").and_then(Value::as_str);
                let t = p.get("text").and_then(Value::as_str);
                match (ty, t) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(ApiError::bad(
                            &field,
                            format!("{field}: only text parts are supported, got {}", short(p)),
                        ))
                    }
                }
            }
            Ok(text)
        }
        Some(v) => Err(ApiError::bad(
            &field,
            format!(
                "{field} must be a string or an array of text parts, got {}",
                short(v)
            ),
        )),
    }
}

/// Parses a chat completions body.
pub fn parse_chat(o: &Map<String, Value>) -> Result<ChatParams, ApiError> {
    let common = parse_common(o, true)?;
    let msgs = match present(o, "messages") {
        None => return Err(ApiError::bad("messages", "messages is required")),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(v) => {
            return Err(ApiError::bad(
                "messages",
                format!("messages must be a non-empty array, got {}", short(v)),
            ))
        }
    };
    let mut messages = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(ApiError::bad(
                "messages",
                format!("messages[{i}] must be an object, got {}", short(m)),
            ));
        };
        let role = match m.get("role") {
            Some(Value::String(r))
                if ["system", "user", "assistant", "tool", "developer"].contains(&r.as_str()) =>
            {
                r.clone()
            }
            other => {
                return Err(ApiError::bad(
                    &format!("messages[{i}].role"),
                    format!(
                    "messages[{i}].role must be system, user, assistant, tool or developer, got {}",
                    other.map_or("nothing".to_string(), short)
                ),
                ))
            }
        };
        messages.push(ChatMessage {
            role,
            content: message_content(m, i)?,
        });
    }
    let add_generation_prompt = opt_bool(o, "add_generation_prompt")?.unwrap_or(true);
    Ok(ChatParams {
        common,
        messages,
        add_generation_prompt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn bad_inputs_are_400_with_the_field_named() {
        let cases = [
            json!({"prompt": "a", "max_tokens": 0}),
            json!({"prompt": "a", "max_tokens": -3}),
            json!({"prompt": "a", "max_tokens": "5"}),
            json!({"prompt": "a", "temperature": -1}),
            json!({"prompt": "a", "temperature": "hot"}),
            json!({"prompt": "a", "n": 2}),
            json!({"prompt": "a", "top_p": 1.5}),
            json!({"prompt": "a", "stop": 5}),
            json!({"prompt": "a", "logprobs": 50}),
            json!({"prompt": [1, 2, 999]}),
            json!({"prompt": [1, -2]}),
            json!({"prompt": [1.5]}),
            json!({"prompt": 7}),
            json!({"prompt": []}),
            json!({"prompt": ["a", 1]}),
            json!({"max_tokens": 3}),
            json!({"prompt": "a", "stream_options": {"include_usage": true}}),
            json!({"prompt": "a", "seed": "x"}),
        ];
        for c in cases {
            let e = parse_completion(&obj(c.clone()), 512).unwrap_err();
            assert_eq!(e.status, 400, "{c}");
            assert!(!e.message.is_empty());
        }
        let chat_cases = [
            json!({"messages": []}),
            json!({"messages": "hi"}),
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            json!({"messages": [{"content": "x"}]}),
            json!({"messages": [{"role": "user", "content": 3}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}),
            json!({"messages": [5]}),
        ];
        for c in chat_cases {
            assert_eq!(parse_chat(&obj(c.clone())).unwrap_err().status, 400, "{c}");
        }
        assert_eq!(parse_object(b"{nope").unwrap_err().status, 400);
        assert_eq!(parse_object(b"[1,2]").unwrap_err().status, 400);
        assert_eq!(parse_object(b"").unwrap_err().status, 400);
    }

    #[test]
    fn good_inputs_parse() {
        let p = parse_completion(
            &obj(
                json!({"prompt": ["x", "y"], "max_tokens": 5, "temperature": 0, "stop": "\n",
                        "seed": -1, "n": 1, "logprobs": 2, "stream": true,
                        "stream_options": {"include_usage": true}, "user": "u"}),
            ),
            512,
        )
        .unwrap();
        assert_eq!(p.prompt, PromptInput::Texts(vec!["x".into(), "y".into()]));
        assert_eq!(p.common.max_tokens, Some(5));
        assert_eq!(p.common.sampling.temperature, 0.0);
        assert_eq!(p.common.sampling.seed, Some(u64::MAX));
        assert_eq!(p.common.stop, vec!["\n".to_string()]);
        assert_eq!(p.common.logprobs, Some(2));
        assert!(p.common.include_usage);
        let p = parse_completion(&obj(json!({"prompt": [[1, 2], [3]]})), 512).unwrap();
        assert_eq!(p.prompt, PromptInput::Tokens(vec![vec![1, 2], vec![3]]));
        let c = parse_chat(&obj(json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
                                        "max_completion_tokens": 7, "logprobs": true, "top_logprobs": 2}))).unwrap();
        assert_eq!(c.messages[0].content, "ab");
        assert_eq!(c.common.max_tokens, Some(7));
        assert_eq!(c.common.logprobs, Some(2));
        assert!(c.add_generation_prompt);
    }
}

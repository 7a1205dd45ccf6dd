//! Chat templates: the GGUF `tokenizer.chat_template` (Jinja) rendered with minijinja in a
//! sandbox: no loader (no includes from disk), a fuel limit on instructions, a recursion limit,
//! and a size limit on the output. A template only ever comes from the model file, never from a
//! request.
//!
//! When the model has no template, [`CHATML_FALLBACK`] is used (as llama.cpp does).

use minijinja::value::Value;
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;

use crate::{Error, Result};

/// The template used when the GGUF file has none: ChatML.
pub const CHATML_FALLBACK: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Instructions one render may execute.
pub const FUEL: u64 = 1_000_000;
/// Nesting depth a render may reach.
pub const RECURSION_LIMIT: usize = 64;
/// Largest rendered prompt, in bytes.
pub const MAX_OUTPUT: usize = 4 << 20;

/// One chat message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    /// system, user, assistant, tool, developer.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// Whether this is the built-in fallback.
    pub is_fallback: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("is_fallback", &self.is_fallback)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source` (or the ChatML fallback when `None`). `bos` and `eos` are the texts of
    /// the model's special tokens, visible to the template as `bos_token` and `eos_token`.
    pub fn new(source: Option<&str>, bos: &str, eos: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_unknown_method_callback(python_methods);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
        let is_fallback = source.is_none();
        let src = source.unwrap_or(CHATML_FALLBACK).to_string();
        env.add_template_owned("chat", src).map_err(|e| {
            Error::Tokenizer(format!("tokenizer.chat_template does not compile: {e}"))
        })?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
            is_fallback,
        })
    }

    /// Renders `messages` into a prompt. Errors (a template raising, running out of fuel) are
    /// reported as invalid input: the messages are what made this template fail.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Tokenizer(format!("chat template: {e}")))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        };
        let out = tmpl
            .render(ctx)
            .map_err(|e| Error::InvalidInput(format!("messages: chat template failed: {e}")))?;
        if out.len() > MAX_OUTPUT {
            return Err(Error::InvalidInput(format!(
                "messages: rendered prompt of {} bytes exceeds {MAX_OUTPUT}",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// The Python string and dict methods chat templates commonly call.
fn python_methods(
    _state: &minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, JinjaError> {
    let arg_str = |i: usize| args.get(i).and_then(|v| v.as_str().map(str::to_string));
    if let Some(s) = value.as_str() {
        let r: Value = match method {
            "strip" => match arg_str(0) {
                Some(c) => s.trim_matches(|x| c.contains(x)).into(),
                None => s.trim().into(),
            },
            "lstrip" => match arg_str(0) {
                Some(c) => s.trim_start_matches(|x| c.contains(x)).into(),
                None => s.trim_start().into(),
            },
            "rstrip" => match arg_str(0) {
                Some(c) => s.trim_end_matches(|x| c.contains(x)).into(),
                None => s.trim_end().into(),
            },
            "upper" => s.to_uppercase().into(),
            "lower" => s.to_lowercase().into(),
            "title" => minijinja::filters::title(s.into()).into(),
            "startswith" => s
                .starts_with(arg_str(0).unwrap_or_default().as_str())
                .into(),
            "endswith" => s.ends_with(arg_str(0).unwrap_or_default().as_str()).into(),
            "replace" => s
                .replace(
                    arg_str(0).unwrap_or_default().as_str(),
                    arg_str(1).unwrap_or_default().as_str(),
                )
                .into(),
            "split" => {
                let parts: Vec<String> = match arg_str(0) {
                    Some(sep) if !sep.is_empty() => {
                        s.split(sep.as_str()).map(String::from).collect()
                    }
                    _ => s.split_whitespace().map(String::from).collect(),
                };
                Value::from(parts)
            }
            _ => return Err(JinjaError::from(ErrorKind::UnknownMethod)),
        };
        return Ok(r);
    }
    if value.as_object().is_some() {
        match method {
            "items" => {
                let mut out = Vec::new();
                if let Ok(keys) = value.try_iter() {
                    for k in keys {
                        let v = value.get_item(&k).unwrap_or(Value::UNDEFINED);
                        out.push(Value::from(vec![k, v]));
                    }
                }
                return Ok(Value::from(out));
            }
            "get" => {
                let key = args.first().cloned().unwrap_or(Value::UNDEFINED);
                let v = value.get_item(&key).unwrap_or(Value::UNDEFINED);
                if v.is_undefined() {
                    return Ok(args.get(1).cloned().unwrap_or(Value::from(())));
                }
                return Ok(v);
            }
            "keys" => return Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
            _ => {}
        }
    }
    Err(JinjaError::from(ErrorKind::UnknownMethod))
}

/// The current UTC date/time formatted with the strftime codes templates use.
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86400) as i64;
    // Civil-from-days (Howard Hinnant).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const MONTH: [&str; 12] = [
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
    let mi = (m - 1) as usize;
    fmt.replace("%d", &format!("{d:02}"))
        .replace("%m", &format!("{m:02}"))
        .replace("%Y", &y.to_string())
        .replace("%B", MONTH[mi])
        .replace("%b", MON[mi])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(v: &[(&str, &str)]) -> Vec<ChatMessage> {
        v.iter()
            .map(|(r, c)| ChatMessage {
                role: r.to_string(),
                content: c.to_string(),
            })
            .collect()
    }

    // Expected strings were rendered by Python jinja2 (an independent engine) from the
    // templates of the qwen2 and phi-3 vocab GGUFs.
    const QWEN2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn qwen2_template_renders_like_jinja2() {
        let t = ChatTemplate::new(Some(QWEN2), "", "<|endoftext|>").unwrap();
        let out = t
            .render(
                &msgs(&[
                    ("user", "Hi there"),
                    ("assistant", "Hello"),
                    ("user", "Bye"),
                ]),
                true,
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t
            .render(&msgs(&[("system", "S"), ("user", "U")]), false)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        );
    }

    #[test]
    fn fallback_is_chatml() {
        let t = ChatTemplate::new(None, "<s>", "</s>").unwrap();
        assert!(t.is_fallback);
        let out = t.render(&msgs(&[("user", "Once")]), true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nOnce<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn bos_token_raise_exception_and_python_methods() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role not in ['user'] %}{{ raise_exception('only user') }}{% endif %}[{{ m.content.strip() | upper }}]{% endfor %}";
        let t = ChatTemplate::new(Some(src), "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&msgs(&[("user", "  a b ")]), true).unwrap(),
            "<s>[A B]"
        );
        let e = t.render(&msgs(&[("system", "x")]), true).unwrap_err();
        assert!(e.to_string().contains("only user"), "{e}");
    }

    #[test]
    fn runaway_templates_are_stopped() {
        let looping =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(Some(looping), "", "").unwrap();
        assert!(t.render(&[], true).is_err());
        let rec = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        let t = ChatTemplate::new(Some(rec), "", "").unwrap();
        assert!(t.render(&[], true).is_err());
        assert!(ChatTemplate::new(Some("{% for %}"), "", "").is_err());
        // No loader: includes cannot reach the file system.
        let inc = "{% include '/etc/passwd' %}";
        let t = ChatTemplate::new(Some(inc), "", "").unwrap();
        assert!(t.render(&[], true).is_err());
    }
}

//! Request bodies of `/v1/completions` and `/v1/chat/completions` as OpenAI defines them, and
//! their validation into one [`Params`]. Fields we do not know are ignored (as OpenAI's
//! server ignores e.g. `user`); fields we know but cannot honour (`n` > 1, `logprobs`, `echo`,
//! penalties, tools...) are refused with a 400 naming the parameter, never silently dropped.

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::stop::MAX_STOP;
use super::template::TemplateMessage;
use crate::sampling::SamplingParams;

/// `prompt`: a string, or forms we refuse (batches, token ids).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Other(Value),
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The parameters both endpoints share.
#[derive(Debug, Default, Deserialize)]
pub struct Common {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub n: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<Value>,
    /// Synapse's extension: speculative decoding for this request (default: the server's).
    pub speculate: Option<bool>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(flatten)]
    pub common: Common,
    pub echo: Option<bool>,
    pub best_of: Option<i64>,
    pub suffix: Option<String>,
}

/// One chat message; `content` is a string or a list of text parts.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Value,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub common: Common,
    pub tools: Option<Vec<Value>>,
    pub functions: Option<Vec<Value>>,
    pub response_format: Option<Value>,
}

/// Validated generation settings.
#[derive(Debug, Clone)]
pub struct Params {
    /// `None`: as many as the context allows (chat) or OpenAI's 16 (completions).
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stops: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub speculate: Option<bool>,
}

fn unsupported(param: &'static str, what: &str) -> ApiError {
    ApiError::invalid(
        format!("{param}: {what} is not supported by this server"),
        Some(param),
    )
}

impl Common {
    /// Checks every shared parameter; names the first one that is wrong.
    pub fn validate(&self) -> Result<Params, ApiError> {
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::invalid(
                format!("n: only 1 choice per request is supported, got {n}"),
                Some("n"),
            ));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => None,
            Some(m) if m >= 1 => Some(m as usize),
            Some(m) => {
                return Err(ApiError::invalid(
                    format!("max_tokens must be at least 1, got {m}"),
                    Some("max_tokens"),
                ));
            }
        };
        let temperature = self.temperature.unwrap_or(1.0);
        if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
            return Err(ApiError::invalid(
                format!("temperature must be between 0 and 2, got {temperature}"),
                Some("temperature"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                format!("top_p must be in (0, 1], got {top_p}"),
                Some("top_p"),
            ));
        }
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if v.is_some_and(|v| v != 0.0) {
                return Err(unsupported(name, "a non-zero penalty"));
            }
        }
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(unsupported("logit_bias", "a bias"));
        }
        let wants_logprobs = |v: &Option<Value>| {
            v.as_ref()
                .is_some_and(|v| !(v.is_null() || *v == Value::Bool(false)))
        };
        if wants_logprobs(&self.logprobs) {
            return Err(unsupported("logprobs", "returning log probabilities"));
        }
        if wants_logprobs(&self.top_logprobs) && self.top_logprobs != Some(Value::from(0)) {
            return Err(unsupported("top_logprobs", "returning log probabilities"));
        }
        let stops = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stops.len() > MAX_STOP {
            return Err(ApiError::invalid(
                format!("stop: at most {MAX_STOP} sequences, got {}", stops.len()),
                Some("stop"),
            ));
        }
        if stops.iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                "stop: sequences must not be empty",
                Some("stop"),
            ));
        }
        let seed = match self.seed {
            Some(s) => s as u64,
            None => rand::random(),
        };
        Ok(Params {
            max_tokens,
            sampling: SamplingParams {
                temperature,
                top_p,
                seed,
                ..SamplingParams::default()
            },
            stops,
            stream: self.stream,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            speculate: self.speculate,
        })
    }
}

impl CompletionRequest {
    /// The prompt text and the validated parameters.
    pub fn validate(&self) -> Result<(String, Params), ApiError> {
        if self.echo == Some(true) {
            return Err(unsupported("echo", "echoing the prompt"));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(unsupported("best_of", "best_of other than 1"));
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(unsupported("suffix", "insertion (suffix)"));
        }
        let prompt = match &self.prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Texts(v) if v.len() == 1 => v[0].clone(),
            Prompt::Texts(v) => {
                return Err(ApiError::invalid(
                    format!(
                        "prompt: one prompt per request is supported, got {}",
                        v.len()
                    ),
                    Some("prompt"),
                ));
            }
            Prompt::Other(_) => {
                return Err(ApiError::invalid(
                    "prompt: must be a string (token-id prompts are not supported)",
                    Some("prompt"),
                ));
            }
        };
        Ok((prompt, self.common.validate()?))
    }
}

impl ChatRequest {
    /// The messages as the template sees them and the validated parameters.
    pub fn validate(&self) -> Result<(Vec<TemplateMessage>, Params), ApiError> {
        if self.tools.as_ref().is_some_and(|t| !t.is_empty())
            || self.functions.as_ref().is_some_and(|t| !t.is_empty())
        {
            return Err(unsupported("tools", "tool calling"));
        }
        if let Some(f) = &self.response_format
            && f.get("type").and_then(Value::as_str) != Some("text")
        {
            return Err(unsupported(
                "response_format",
                "a response format other than text",
            ));
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages: at least one message is required",
                Some("messages"),
            ));
        }
        let mut out = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::invalid(
                        format!(
                            "messages[{i}].role: '{other}' is not supported (system, developer, user, assistant)"
                        ),
                        Some("messages"),
                    ));
                }
            };
            out.push(TemplateMessage {
                role: role.into(),
                content: content_text(&m.content).map_err(|why| {
                    ApiError::invalid(format!("messages[{i}].content: {why}"), Some("messages"))
                })?,
            });
        }
        Ok((out, self.common.validate()?))
    }
}

/// A message's text: a string, null (empty), or text parts joined.
fn content_text(v: &Value) -> Result<String, String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => Ok(t),
                    (kind, _) => Err(format!(
                        "only text parts are supported, got {}",
                        kind.unwrap_or("a part without a type")
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.concat()),
        _ => Err("must be a string or a list of text parts".into()),
    }
}

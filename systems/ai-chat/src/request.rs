//! The one request shape chat-completion takes, whichever provider answers:
//!
//! ```json
//! {"conversation_id": "<uuid>?", "message": "new user message"  | "messages": [{"role", "content"}],
//!  "model": "gpt-4o-mini", "provider": "openai"?, "fallbacks": [{"provider", "model"}]?,
//!  "temperature": 0.7?, "max_tokens": 512?, "stream": true?, "system": "..."?, "title": "..."?}
//! ```
//!
//! `message` continues a conversation (its saved history is sent before
//! it); `messages` sends exactly the given context. The provider is named or
//! inferred from the model's family; `fallbacks` are tried in order when the
//! one before fails retryably before its first token.

use edgeworks_core::ApiError;
use edgeworks_input::input;
use edgeworks_input::validate::{Field, Schema};
use edgeworks_llm::call::Provider;
use edgeworks_llm::prompt::{Conversation, Message, Role};
use serde::Deserialize;
use serde_json::json;

/// Longest message content, in characters.
pub const MAX_CONTENT_CHARS: usize = 32_000;
const PROVIDERS: &[&str] = &["openai", "anthropic", "mistral", "gemini", "claude", "google"];

/// One message of a client-supplied context.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A model to try.
#[derive(Debug, Clone, Deserialize)]
pub struct CandidateIn {
    /// Provider name.
    pub provider: Option<String>,
    /// Model id.
    pub model: String,
}

fn model_field() -> Field {
    Field::string().non_blank().max_chars(100)
}

fn candidate_schema() -> Schema {
    Schema::object()
        .field("provider", Field::string().one_of(PROVIDERS))
        .field("model", model_field().required())
}

input! {
    /// The body of a completion request.
    pub struct CompletionRequest {
        /// Continue this conversation (the caller's own).
        pub conversation_id: Option<String> = Field::uuid(),
        /// A new user message.
        pub message: Option<String> = Field::string().non_blank().max_chars(MAX_CONTENT_CHARS),
        /// Or the full context.
        pub messages: Option<Vec<ChatMessage>> = Field::array(Field::object(
            Schema::object()
                .field("role", Field::string().required().one_of(&["system", "user", "assistant"]))
                .field("content", Field::string().required().max_chars(MAX_CONTENT_CHARS)),
        ))
        .min_items(1)
        .max_items(200),
        /// The model.
        pub model: String = model_field().required(),
        /// Its provider (inferred from the model when absent).
        pub provider: Option<String> = Field::string().one_of(PROVIDERS),
        /// Models to fall back to, in order.
        pub fallbacks: Option<Vec<CandidateIn>> = Field::array(Field::object(candidate_schema())).max_items(3),
        /// Sampling temperature.
        pub temperature: Option<f64> = Field::number().range_f64(0.0, 2.0),
        /// Output limit.
        pub max_tokens: Option<u32> = Field::integer().range(1, 1_000_000),
        /// Stream the answer as server-sent events.
        pub stream: Option<bool> = Field::boolean(),
        /// A system instruction.
        pub system: Option<String> = Field::string().max_chars(8000),
        /// The title of a new conversation.
        pub title: Option<String> = Field::string().max_chars(200),
    } check = check_request
}

fn field_error(field: &str, code: &str, message: &str) -> ApiError {
    ApiError::unprocessable(
        "the request has invalid fields",
        json!({ "fields": [{ "field": field, "code": code, "message": message }] }),
    )
}

fn check_request(r: &CompletionRequest) -> Result<(), ApiError> {
    match (&r.message, &r.messages) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(field_error(
                "message",
                "message_or_messages",
                "send either message (a new user message) or messages (the full context)",
            ))
        }
        (None, Some(ms)) if ms.last().map(|m| m.role.as_str()) != Some("user") => {
            return Err(field_error(
                "messages",
                "last_not_user",
                "the last message must be the user's",
            ))
        }
        _ => {}
    }
    let main = CandidateIn {
        provider: r.provider.clone(),
        model: r.model.clone(),
    };
    for (i, c) in std::iter::once(&main).chain(r.fallbacks.iter().flatten()).enumerate() {
        if resolve(c).is_none() {
            let field = if i == 0 {
                "provider".to_string()
            } else {
                format!("fallbacks[{}]", i - 1)
            };
            return Err(field_error(
                &field,
                "unknown_provider",
                "name the provider: the model's family is not one of openai, anthropic, mistral, gemini",
            ));
        }
    }
    Ok(())
}

/// A provider and model to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Which API.
    pub provider: Provider,
    /// Model id.
    pub model: String,
}

/// The provider a model id belongs to, by its family's prefix.
pub fn infer_provider(model: &str) -> Option<Provider> {
    let m = model.to_ascii_lowercase();
    let has = |prefixes: &[&str]| prefixes.iter().any(|p| m.starts_with(p));
    if has(&["gpt-", "o1", "o3", "o4", "chatgpt-"]) {
        Some(Provider::OpenAi)
    } else if has(&["claude"]) {
        Some(Provider::Anthropic)
    } else if has(&[
        "mistral",
        "ministral",
        "codestral",
        "open-mistral",
        "pixtral",
        "magistral",
    ]) {
        Some(Provider::Mistral)
    } else if has(&["gemini"]) {
        Some(Provider::Gemini)
    } else {
        None
    }
}

fn resolve(c: &CandidateIn) -> Option<Candidate> {
    let provider = match &c.provider {
        Some(p) => Provider::parse(p)?,
        None => infer_provider(&c.model)?,
    };
    Some(Candidate {
        provider,
        model: c.model.trim().to_string(),
    })
}

impl CompletionRequest {
    /// The models to try, in order, without repeats.
    pub fn candidates(&self) -> Vec<Candidate> {
        let main = CandidateIn {
            provider: self.provider.clone(),
            model: self.model.clone(),
        };
        let mut out: Vec<Candidate> = Vec::new();
        for c in std::iter::once(&main).chain(self.fallbacks.iter().flatten()) {
            if let Some(c) = resolve(c) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }

    /// The user message to save (the new one, or the last of `messages`).
    pub fn user_message(&self) -> Option<&str> {
        match (&self.message, &self.messages) {
            (Some(m), _) => Some(m.as_str()),
            (None, Some(ms)) => ms.last().map(|m| m.content.as_str()),
            _ => None,
        }
    }

    /// The conversation sent to the provider: `history` (the saved
    /// conversation, oldest first) then the new message, or exactly
    /// `messages`. System messages become the system instruction.
    pub fn conversation(&self, history: Vec<Message>) -> Conversation {
        let mut system: Vec<String> = self.system.iter().cloned().collect();
        let mut messages = Vec::new();
        match (&self.message, &self.messages) {
            (Some(m), _) => {
                messages = history;
                messages.push(Message::user(m.clone()));
            }
            (None, Some(ms)) => {
                for m in ms {
                    match m.role.as_str() {
                        "system" => system.push(m.content.clone()),
                        "assistant" => messages.push(Message {
                            role: Role::Assistant,
                            content: m.content.clone(),
                        }),
                        _ => messages.push(Message::user(m.content.clone())),
                    }
                }
            }
            _ => {}
        }
        let system = system.join("\n\n");
        let estimated_tokens = worst_case_prompt_tokens(&system, &messages);
        Conversation {
            system,
            messages,
            estimated_tokens,
            dropped_messages: 0,
        }
    }
}

/// Tokens the prompt can cost at most: a byte-level tokenizer never makes
/// more tokens than bytes, plus each provider's framing per message. This
/// is what the reservation charges for the prompt, so no prompt can cost
/// more than was reserved (the price of exactness: English text reserves
/// about four times what it uses; settlement charges what it used).
pub fn worst_case_prompt_tokens(system: &str, messages: &[Message]) -> u32 {
    const FRAMING: u64 = 8;
    let bytes: u64 =
        messages.iter().map(|m| m.content.len() as u64 + FRAMING).sum::<u64>() + system.len() as u64 + FRAMING;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_input::validate::Validate;

    fn parse(v: serde_json::Value) -> Result<CompletionRequest, ApiError> {
        let r: CompletionRequest = CompletionRequest::schema().parse_value(v)?;
        r.check()?;
        Ok(r)
    }

    #[test]
    fn the_provider_is_inferred_from_the_model_and_fallbacks_keep_their_order() {
        let r = parse(json!({"message": "hi", "model": "gpt-4o-mini",
            "fallbacks": [{"model": "claude-3-5-haiku-latest"}, {"provider": "gemini", "model": "gemini-2.0-flash"},
                          {"model": "gpt-4o-mini"}]}))
        .unwrap();
        let c: Vec<(Provider, String)> = r.candidates().into_iter().map(|c| (c.provider, c.model)).collect();
        let expected = [
            (Provider::OpenAi, "gpt-4o-mini"),
            (Provider::Anthropic, "claude-3-5-haiku-latest"),
            (Provider::Gemini, "gemini-2.0-flash"),
        ]
        .map(|(p, m)| (p, m.to_string()));
        assert_eq!(c, expected.to_vec());
    }

    #[test]
    fn an_unknown_family_without_a_provider_is_a_422() {
        let e = parse(json!({"message": "hi", "model": "llama-3"})).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(parse(json!({"message": "hi", "model": "llama-3", "provider": "mistral"})).is_ok());
    }

    #[test]
    fn exactly_one_of_message_and_messages_and_the_last_message_is_the_users() {
        assert_eq!(parse(json!({"model": "gpt-4o"})).unwrap_err().status(), 422);
        assert_eq!(
            parse(json!({"model": "gpt-4o", "message": "a", "messages": [{"role": "user", "content": "b"}]}))
                .unwrap_err()
                .status(),
            422
        );
        let e = parse(json!({"model": "gpt-4o", "messages": [{"role": "assistant", "content": "b"}]})).unwrap_err();
        assert_eq!(e.details().unwrap()["fields"][0]["code"], "last_not_user");
    }

    #[test]
    fn a_nul_character_anywhere_is_refused_before_sql_sees_it() {
        let e = parse(json!({"model": "gpt-4o", "message": "a\u{0}b"})).unwrap_err();
        assert_eq!(e.status(), 422);
    }

    #[test]
    fn messages_become_system_and_turns_and_the_reservation_bounds_the_bytes() {
        let r = parse(json!({"model": "gpt-4o", "system": "S", "messages": [
            {"role": "system", "content": "T"}, {"role": "user", "content": "héllo"}]}))
        .unwrap();
        let c = r.conversation(Vec::new());
        assert_eq!(c.system, "S\n\nT");
        assert_eq!(c.messages, vec![Message::user("héllo")]);
        // "S\n\nT" is 4 bytes, "héllo" 6, framing 8 + 8.
        assert_eq!(c.estimated_tokens, 4 + 6 + 16);
    }
}

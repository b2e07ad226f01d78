//! Prompt building for chat: a field's system prompt template with its
//! placeholders filled, the session's history trimmed to a token budget, and
//! the new question last.
//!
//! Provider clients turn a [`Conversation`] into their own wire format; the
//! token estimator here is the one used both for budgeting and wherever a
//! provider does not report usage (the offline provider), so the numbers a
//! client sees are computed the same way everywhere.
//!
//! Placeholder syntax: `{name}` where `name` is an ASCII identifier
//! (`[A-Za-z_][A-Za-z0-9_]*`). `{{` and `}}` stand for literal braces. Any
//! other brace (`{ "a": 1 }`, a lone `}`) is kept as written, so prose and
//! JSON examples in a template need no escaping. Filled values are inserted
//! verbatim and never re-scanned, so a value cannot smuggle in a placeholder.

use std::fmt;

/// Who said a message in the session history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// Accepts the roles stored in message tables (`user`, `assistant`, and
    /// the Gemini spelling `model`).
    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "user" => Some(Role::User),
            "assistant" | "model" => Some(Role::Assistant),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// What a provider is asked: an optional system instruction and the ordered
/// messages, the last of which is always the new user question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Empty when the field has no system prompt.
    pub system: String,
    pub messages: Vec<Message>,
    /// Estimated input size (system + messages), for logs and quotas.
    pub estimated_tokens: u32,
    /// History messages left out to stay within the budget.
    pub dropped_messages: usize,
}

impl Conversation {
    /// The new question (the last message).
    pub fn question(&self) -> &str {
        self.messages.last().map(|m| m.content.as_str()).unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptError {
    /// The template names a placeholder no value was given for.
    UnknownPlaceholder { name: String },
    /// The question is empty (or only whitespace).
    EmptyQuestion,
    /// The question does not fit even with no history at all.
    QuestionTooLong {
        question_tokens: u32,
        available_tokens: u32,
    },
}

impl fmt::Display for PromptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptError::UnknownPlaceholder { name } => {
                write!(f, "the system prompt template uses {{{name}}}, which has no value")
            }
            PromptError::EmptyQuestion => write!(f, "the question is empty"),
            PromptError::QuestionTooLong {
                question_tokens,
                available_tokens,
            } => write!(
                f,
                "the question is about {question_tokens} tokens; at most {available_tokens} fit in the prompt"
            ),
        }
    }
}

impl std::error::Error for PromptError {}

impl From<PromptError> for edgeworks_core::ApiError {
    fn from(e: PromptError) -> Self {
        match &e {
            // A broken template is our configuration, not the caller's input.
            PromptError::UnknownPlaceholder { .. } => {
                edgeworks_core::ApiError::new(500, "misconfigured", e.to_string())
            }
            PromptError::EmptyQuestion => edgeworks_core::ApiError::new(422, "empty_question", e.to_string()),
            PromptError::QuestionTooLong {
                question_tokens,
                available_tokens,
            } => {
                edgeworks_core::ApiError::new(422, "question_too_long", e.to_string()).with_details(serde_json::json!({
                    "question_tokens": question_tokens,
                    "available_tokens": available_tokens,
                }))
            }
        }
    }
}

/// Fills `{name}` placeholders from `values` (see the module doc for the
/// syntax). A placeholder without a value is an error rather than left in
/// place: the model would otherwise read a literal `{field_name}`.
pub fn fill_template(template: &str, values: &[(&str, &str)]) -> Result<String, PromptError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix('{') {
            match placeholder_name(inner) {
                Some(name) => {
                    let value = values
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| *v)
                        .ok_or_else(|| PromptError::UnknownPlaceholder { name: name.to_string() })?;
                    out.push_str(value);
                    rest = &inner[name.len() + 1..];
                }
                None => {
                    out.push('{');
                    rest = inner;
                }
            }
        } else {
            // A lone '}' is literal.
            out.push('}');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `name}` at the start of `s` → `name`, if `name` is an identifier.
fn placeholder_name(s: &str) -> Option<&str> {
    let end = s.find('}')?;
    let name = &s[..end];
    let mut chars = name.chars();
    let first = chars.next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Some(name)
    } else {
        None
    }
}

/// Framing a provider adds around each message (role markers, separators).
pub const MESSAGE_OVERHEAD_TOKENS: u32 = 4;

/// Default input budget for the chat job queue: room for a field prompt and
/// several exchanges while staying cheap and fast on any Gemini model.
pub const DEFAULT_PROMPT_BUDGET_TOKENS: u32 = 8_000;

/// Estimates how many tokens `text` costs, leaning high so a budget is not
/// overrun. Counted in quarter tokens per character:
/// - ASCII: 1/4 (English averages about four characters per token);
/// - other alphabetic scripts in the BMP (accented Latin, Cyrillic, Greek,
///   Arabic, Hebrew, Devanagari, ...): 1/2;
/// - CJK ideographs, kana, hangul and full-width forms: 1 each;
/// - characters outside the BMP (emoji, rare ideographs): 2 each.
///
/// The sum is rounded up, so any non-empty text costs at least one token.
pub fn estimate_tokens(text: &str) -> u32 {
    let quarters: u64 = text.chars().map(char_quarter_tokens).sum();
    u32::try_from(quarters.div_ceil(4)).unwrap_or(u32::MAX)
}

fn char_quarter_tokens(c: char) -> u64 {
    let cp = c as u32;
    if cp < 0x80 {
        1
    } else if cp > 0xFFFF {
        8
    } else if is_dense_script(cp) {
        4
    } else {
        2
    }
}

/// Scripts where a tokenizer spends about one token per character.
fn is_dense_script(cp: u32) -> bool {
    matches!(cp,
        0x1100..=0x11FF      // Hangul Jamo
        | 0x2E80..=0x2FDF    // CJK radicals
        | 0x3000..=0x30FF    // CJK punctuation, hiragana, katakana
        | 0x3100..=0x31FF    // bopomofo, hangul compatibility jamo, katakana ext.
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xA960..=0xA97F    // Hangul Jamo extended-A
        | 0xAC00..=0xD7FF    // Hangul syllables and Jamo extended-B
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF00..=0xFFEF    // half- and full-width forms
    )
}

/// A message's cost including its framing.
pub fn estimate_message_tokens(content: &str) -> u32 {
    estimate_tokens(content).saturating_add(MESSAGE_OVERHEAD_TOKENS)
}

/// Builds the conversation sent to a provider.
///
/// `history` is the session's earlier messages, oldest first, NOT including
/// the new `question`. Everything (system prompt, kept history, question)
/// must fit in `budget_tokens`. History is dropped oldest exchange first
/// (an exchange is a user message with the replies that follow it), whole
/// messages only, and only from the old end, so what is kept is always the
/// most recent contiguous stretch of the session in its original order.
pub fn build_conversation(
    system: &str,
    history: &[Message],
    question: &str,
    budget_tokens: u32,
) -> Result<Conversation, PromptError> {
    if question.trim().is_empty() {
        return Err(PromptError::EmptyQuestion);
    }
    let system = system.trim();
    let system_tokens = if system.is_empty() {
        0
    } else {
        estimate_message_tokens(system)
    };
    let question_tokens = estimate_message_tokens(question);
    let available = budget_tokens.saturating_sub(system_tokens);
    if question_tokens > available {
        return Err(PromptError::QuestionTooLong {
            question_tokens,
            available_tokens: available,
        });
    }

    let mut remaining = available - question_tokens;
    // Walk exchanges from the newest; stop at the first that does not fit so
    // the kept history has no holes.
    let mut keep_from = history.len();
    for (start, end) in exchanges(history).into_iter().rev() {
        let cost = history[start..end]
            .iter()
            .fold(0u32, |acc, m| acc.saturating_add(estimate_message_tokens(&m.content)));
        if cost > remaining {
            break;
        }
        remaining -= cost;
        keep_from = start;
    }

    let mut messages: Vec<Message> = history[keep_from..].to_vec();
    messages.push(Message::user(question));
    Ok(Conversation {
        system: system.to_string(),
        messages,
        estimated_tokens: budget_tokens - remaining,
        dropped_messages: keep_from,
    })
}

/// Splits history into `[start, end)` ranges, each a user message and the
/// assistant replies after it. Assistant messages before the first user
/// message (a greeting) form their own range.
fn exchanges(history: &[Message]) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for (i, m) in history.iter().enumerate() {
        if m.role == Role::User && i > start {
            ranges.push((start, i));
            start = i;
        }
    }
    if start < history.len() {
        ranges.push((start, history.len()));
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(n: usize) -> Vec<Message> {
        (0..n)
            .flat_map(|i| {
                [
                    Message::user(format!("question {i} {}", "q".repeat(36))),
                    Message::assistant(format!("answer {i} {}", "a".repeat(36))),
                ]
            })
            .collect()
    }

    #[test]
    fn placeholders_are_filled_and_escapes_become_braces() {
        let out = fill_template(
            "You teach {field_name} to {audience}. Answer as JSON like {{\"a\": 1}}.",
            &[("field_name", "Biology"), ("audience", "students")],
        )
        .unwrap();
        assert_eq!(out, "You teach Biology to students. Answer as JSON like {\"a\": 1}.");
    }

    #[test]
    fn braces_that_are_not_placeholders_stay_literal() {
        let t = "Example: { \"x\": 1 } and a lone } and {not valid} and {";
        assert_eq!(fill_template(t, &[]).unwrap(), t);
    }

    #[test]
    fn a_placeholder_without_a_value_is_an_error_naming_it() {
        let err = fill_template("About {field_name}.", &[("other", "x")]).unwrap_err();
        assert_eq!(
            err,
            PromptError::UnknownPlaceholder {
                name: "field_name".into()
            }
        );
        assert!(err.to_string().contains("{field_name}"));
    }

    #[test]
    fn filled_values_are_not_rescanned_for_placeholders() {
        let out = fill_template("{a}", &[("a", "{b}"), ("b", "SECRET")]).unwrap();
        assert_eq!(out, "{b}");
    }

    #[test]
    fn estimator_counts_ascii_by_four_and_dense_scripts_by_one() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a"), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens(&"x".repeat(400)), 100);
        assert_eq!(estimate_tokens("你好世界"), 4);
        assert_eq!(estimate_tokens("こんにちは"), 5);
        assert_eq!(estimate_tokens("안녕"), 2);
        assert_eq!(estimate_tokens("привет"), 3);
        assert_eq!(estimate_tokens("😀😀"), 4);
    }

    #[test]
    fn everything_fits_when_the_budget_allows() {
        let h = history(3);
        let c = build_conversation("sys", &h, "new question?", 10_000).unwrap();
        assert_eq!(c.messages.len(), 7);
        assert_eq!(&c.messages[..6], &h[..]);
        assert_eq!(c.dropped_messages, 0);
        assert_eq!(c.system, "sys");
        let expected = estimate_message_tokens("sys")
            + h.iter().map(|m| estimate_message_tokens(&m.content)).sum::<u32>()
            + estimate_message_tokens("new question?");
        assert_eq!(c.estimated_tokens, expected);
    }

    #[test]
    fn trimming_drops_oldest_exchanges_and_keeps_newest_in_order() {
        let h = history(5);
        let per_message = estimate_message_tokens(&h[0].content);
        let q = "what next?";
        // Room for the question and exactly two exchanges.
        let budget = estimate_message_tokens(q) + 4 * per_message + per_message / 2;
        let c = build_conversation("", &h, q, budget).unwrap();
        assert_eq!(c.dropped_messages, 6);
        assert_eq!(&c.messages[..4], &h[6..]);
        assert!(c.messages[0].content.starts_with("question 3"));
        assert!(c.messages[3].content.starts_with("answer 4"));
        assert_eq!(c.messages.last().unwrap(), &Message::user(q));
        assert!(c.estimated_tokens <= budget);
    }

    #[test]
    fn an_exchange_is_never_split() {
        let h = history(2);
        let per_message = estimate_message_tokens(&h[0].content);
        let q = "q";
        // One message' worth of room: the last exchange needs two, so none is kept.
        let budget = estimate_message_tokens(q) + per_message + 1;
        let c = build_conversation("", &h, q, budget).unwrap();
        assert_eq!(c.messages, vec![Message::user(q)]);
        assert_eq!(c.dropped_messages, 4);
    }

    #[test]
    fn older_exchanges_are_not_kept_past_a_gap() {
        // Newest exchange is huge; an older small one must not be kept alone.
        let h = vec![
            Message::user("small"),
            Message::assistant("small"),
            Message::user("x".repeat(4000)),
            Message::assistant("y"),
        ];
        let c = build_conversation("", &h, "q", 200).unwrap();
        assert_eq!(c.messages, vec![Message::user("q")]);
    }

    #[test]
    fn the_system_prompt_counts_against_the_budget() {
        let h = history(1);
        let q = "q";
        let without = build_conversation("", &h, q, 60).unwrap();
        assert_eq!(without.messages.len(), 3);
        let with = build_conversation(&"s".repeat(100), &h, q, 60).unwrap();
        assert_eq!(with.messages.len(), 1);
    }

    #[test]
    fn a_question_over_the_budget_is_a_clear_error() {
        let q = "w".repeat(1000);
        let err = build_conversation("", &[], &q, 100).unwrap_err();
        assert_eq!(
            err,
            PromptError::QuestionTooLong {
                question_tokens: 254,
                available_tokens: 100
            }
        );
        let api: edgeworks_core::ApiError = err.into();
        assert_eq!(api.status(), 422);
        assert_eq!(api.code(), "question_too_long");
    }

    #[test]
    fn an_empty_question_is_rejected() {
        assert_eq!(
            build_conversation("s", &history(1), "  \n", 1000).unwrap_err(),
            PromptError::EmptyQuestion
        );
    }

    #[test]
    fn leading_assistant_greeting_is_its_own_exchange() {
        let h = vec![
            Message::assistant("Welcome!"),
            Message::user("hi"),
            Message::assistant("hello"),
        ];
        assert_eq!(exchanges(&h), vec![(0, 1), (1, 3)]);
        let c = build_conversation("", &h, "q", 10_000).unwrap();
        assert_eq!(c.messages[0], Message::assistant("Welcome!"));
        assert_eq!(c.question(), "q");
    }

    #[test]
    fn the_question_is_always_last() {
        for budget in [20, 30, 60, 100, 1000] {
            let c = build_conversation("sys", &history(4), "last one", budget).unwrap();
            assert_eq!(c.messages.last().unwrap(), &Message::user("last one"));
        }
    }
}

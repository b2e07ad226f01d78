//! The offline provider: answers without any network call when no AI key is
//! configured, so the local stack works end to end with no secret.
//!
//! Every answer says plainly that it came from the offline provider (text
//! prefix, `provider: "offline"`, `model: "offline"`), so it can never pass
//! for a model's reply. It is deterministic: the same conversation always
//! gets the same text, which echoes the question (and the start of the
//! system prompt) so tests can see their input reached the provider. Token
//! usage is computed with the same estimator used for prompt budgets.

use crate::prompt::{estimate_tokens, Conversation};

use crate::chat::{Completion, FinishReason, Usage};

pub const PROVIDER: &str = "offline";
pub const MODEL: &str = "offline";
/// Every offline answer starts with this.
pub const PREFIX: &str = "[offline provider]";

const QUESTION_EXCERPT_CHARS: usize = 200;
const SYSTEM_EXCERPT_CHARS: usize = 120;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OfflineProvider;

impl OfflineProvider {
    pub fn complete(&self, conversation: &Conversation) -> Completion {
        let earlier = conversation.messages.len().saturating_sub(1);
        let mut text = format!(
            "{PREFIX} No AI provider key is configured (set GEMINI_API_KEY to use Gemini), \
             so this reply was produced locally. You asked: \"{}\".",
            excerpt(conversation.question(), QUESTION_EXCERPT_CHARS)
        );
        if !conversation.system.is_empty() {
            text.push_str(&format!(
                " Instructions: \"{}\".",
                excerpt(&conversation.system, SYSTEM_EXCERPT_CHARS)
            ));
        }
        text.push_str(&format!(
            " Context: {earlier} earlier message{}. Reply id {:016x}.",
            if earlier == 1 { "" } else { "s" },
            fingerprint(conversation)
        ));
        let prompt = conversation.estimated_tokens;
        let completion = estimate_tokens(&text);
        Completion {
            text,
            model: MODEL.to_string(),
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt.saturating_add(completion),
                estimated: true,
            },
            provider: PROVIDER,
        }
    }
}

/// Whitespace runs collapsed to one space, cut at `max` characters.
fn excerpt(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

/// FNV-1a over the whole conversation: stable across runs and platforms, so
/// the same input always yields the same reply id.
fn fingerprint(conversation: &Conversation) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
        // A separator byte, so ("ab","c") and ("a","bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(PRIME);
    };
    feed(conversation.system.as_bytes());
    for m in &conversation.messages {
        feed(m.role.as_str().as_bytes());
        feed(m.content.as_bytes());
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::{build_conversation, Message};

    fn conv(system: &str, history: &[Message], q: &str) -> Conversation {
        build_conversation(system, history, q, 10_000).unwrap()
    }

    #[test]
    fn same_conversation_gives_the_same_answer() {
        let h = [Message::user("hi"), Message::assistant("hello")];
        let a = OfflineProvider.complete(&conv("You teach Biology.", &h, "What is a cell?"));
        let b = OfflineProvider.complete(&conv("You teach Biology.", &h, "What is a cell?"));
        assert_eq!(a, b);
    }

    #[test]
    fn different_questions_or_history_give_different_answers() {
        let a = OfflineProvider.complete(&conv("", &[], "What is a cell?"));
        let b = OfflineProvider.complete(&conv("", &[], "What is an atom?"));
        let c = OfflineProvider.complete(&conv("", &[Message::user("earlier")], "What is a cell?"));
        assert_ne!(a.text, b.text);
        assert_ne!(a.text, c.text);
    }

    #[test]
    fn answer_is_labelled_and_echoes_the_question_and_instructions() {
        let h = [Message::user("hi"), Message::assistant("hello")];
        let c = OfflineProvider.complete(&conv("You teach Biology.", &h, "What is\n a   mitochondrion?"));
        assert!(c.text.starts_with("[offline provider] "), "{}", c.text);
        assert!(c.text.contains("\"What is a mitochondrion?\""), "{}", c.text);
        assert!(c.text.contains("You teach Biology."), "{}", c.text);
        assert!(c.text.contains("2 earlier messages"), "{}", c.text);
        assert_eq!(c.provider, "offline");
        assert_eq!(c.model, "offline");
        assert_eq!(c.finish_reason, FinishReason::Stop);
    }

    #[test]
    fn usage_comes_from_the_shared_estimator() {
        let cv = conv("sys", &[], "question");
        let c = OfflineProvider.complete(&cv);
        assert_eq!(c.usage.prompt_tokens, cv.estimated_tokens);
        assert_eq!(c.usage.completion_tokens, estimate_tokens(&c.text));
        assert_eq!(c.usage.total_tokens, c.usage.prompt_tokens + c.usage.completion_tokens);
        assert!(c.usage.estimated);
    }

    #[test]
    fn long_questions_are_excerpted_on_a_char_boundary() {
        let q = "é".repeat(500);
        let c = OfflineProvider.complete(&conv("", &[], &q));
        assert!(c.text.contains(&format!("{}…", "é".repeat(200))));
        assert!(!c.text.contains(&"é".repeat(201)));
    }
}

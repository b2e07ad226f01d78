//! Cleaning user text before it is stored or sent to a model, and the
//! configurable denylist ("harmful content detection").
//!
//! [`clean_text`] is lossy on purpose: it removes what is invisible or
//! abusive (control and zero-width characters, floods of one character,
//! walls of blank lines) and keeps everything a person meant to write.
//!
//! [`Denylist`] refuses text containing listed phrases, matched on whole
//! words, case-insensitively, and through simple obfuscation: separators
//! between letters (`k.i.l.l`, `k i l l`), missing spaces between words,
//! and leetspeak (`0→o 1→i/l 3→e 4→a 5→s 7→t @→a $→s`). A hit is a 422
//! `content_rejected` whose details name only the category, never the
//! matched words (echoing them would turn the API into a filter oracle and
//! put the content in logs).

use serde_json::json;

use edgeworks_core::ApiError;

/// Knobs for [`clean_text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanOptions {
    /// A run of more than this many identical characters is cut to this
    /// many. Generous by default so code banners (`====`) and tables survive.
    pub max_run: usize,
    /// More consecutive blank (whitespace-only) lines than this are cut to this many.
    pub max_blank_lines: usize,
}

impl Default for CleanOptions {
    fn default() -> Self {
        CleanOptions {
            max_run: 32,
            max_blank_lines: 2,
        }
    }
}

/// Invisible characters that carry no meaning in user text but can hide
/// content from people reviewing it: zero-width space/non-joiner/joiner,
/// word joiner, BOM, and the bidirectional embedding/override/isolate
/// controls ("Trojan Source"). Note that removing U+200D splits emoji ZWJ
/// sequences into their parts; that is accepted.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Trims; normalises `\r\n` and `\r` to `\n`; drops control characters
/// except `\n` and `\t`, and the invisible characters above; cuts runs of
/// one repeated character to `max_run`; cuts blank-line runs to
/// `max_blank_lines` (blank lines come out empty).
pub fn clean_text(input: &str, opts: &CleanOptions) -> String {
    let max_run = opts.max_run.max(1);
    let mut flat = String::with_capacity(input.len());
    let mut chars = input.chars().peekable();
    let mut run_char = None;
    let mut run_len = 0usize;
    while let Some(mut c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            c = '\n';
        }
        if (c.is_control() && c != '\n' && c != '\t') || is_invisible(c) {
            continue;
        }
        if Some(c) == run_char {
            run_len += 1;
        } else {
            run_char = Some(c);
            run_len = 1;
        }
        // Newlines are limited by the blank-line rule instead.
        if c == '\n' || run_len <= max_run {
            flat.push(c);
        }
    }

    let mut out = String::with_capacity(flat.len());
    let mut blank_run = 0usize;
    for (i, line) in flat.split('\n').enumerate() {
        let blank = line.trim().is_empty();
        blank_run = if blank { blank_run + 1 } else { 0 };
        if blank && blank_run > opts.max_blank_lines {
            continue;
        }
        if i > 0 {
            out.push('\n');
        }
        if !blank {
            out.push_str(line);
        }
    }
    out.trim().to_string()
}

/// One position of normalised text: a letter with its possible readings,
/// or a gap (any run of whitespace and punctuation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Gap,
    Letter(char, Option<char>),
}

/// Leetspeak readings of a character, besides itself.
fn leet(c: char) -> Option<(char, Option<char>)> {
    Some(match c {
        '0' => ('o', None),
        '1' => ('i', Some('l')),
        '3' => ('e', None),
        '4' | '@' => ('a', None),
        '5' | '$' => ('s', None),
        '7' => ('t', None),
        _ => return None,
    })
}

fn lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

fn tokenize(text: &str) -> Vec<Tok> {
    let mut toks = Vec::with_capacity(text.len());
    for c in text.chars() {
        if is_invisible(c) || (c.is_control() && !c.is_whitespace()) {
            // Invisible characters are no gap: "ki\u{200B}ll" reads "kill".
            continue;
        }
        let tok = if let Some((a, b)) = leet(c) {
            // A digit is itself or its reading; keep the digit out of the
            // match so "1" can stand for "i" or "l".
            Tok::Letter(a, b)
        } else if c.is_alphanumeric() {
            Tok::Letter(lower(c), None)
        } else {
            Tok::Gap
        };
        if tok == Tok::Gap && toks.last() == Some(&Tok::Gap) {
            continue;
        }
        toks.push(tok);
    }
    toks
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    category: String,
    /// Lower-case words of letters.
    words: Vec<Vec<char>>,
    /// Trailing `*` in the config: the last word may continue (`kill*`).
    prefix: bool,
}

impl Rule {
    fn matches_at(&self, toks: &[Tok], start: usize) -> bool {
        if start > 0 && toks[start - 1] != Tok::Gap {
            return false; // not at the start of a word
        }
        let mut i = start;
        for (wi, word) in self.words.iter().enumerate() {
            for (ci, want) in word.iter().enumerate() {
                // Between words a gap is optional ("makeabomb"); inside a
                // word one gap is allowed ("b.o.m.b", "b o m b").
                if (wi > 0 || ci > 0) && toks.get(i) == Some(&Tok::Gap) {
                    i += 1;
                }
                match toks.get(i) {
                    Some(Tok::Letter(a, b)) if a == want || b.as_ref() == Some(want) => i += 1,
                    _ => return false,
                }
            }
        }
        self.prefix || matches!(toks.get(i), None | Some(Tok::Gap))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DenylistError {
    /// An entry has no `category:` prefix (entries are counted from 1).
    #[error("denylist entry {0} has no `category:` prefix")]
    MissingCategory(usize),
    /// Category names are 1 to 40 characters of `a-z`, `0-9`, `_`.
    #[error("denylist entry {0} has an invalid category name")]
    BadCategory(usize),
    /// A term with no letters or digits would match nothing (or everything).
    #[error("denylist entry {0} has a term with no letters")]
    EmptyTerm(usize),
}

/// Phrases that get text refused, grouped by category.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Denylist {
    rules: Vec<Rule>,
}

/// The shipped list: a few unambiguous requests for serious harm. Kept
/// short on purpose; deployments extend it through configuration.
pub const DEFAULT_DENYLIST: &str = "\
self_harm:how to kill myself|ways to kill myself|how to commit suicide;\
violence:how to make a bomb|how to build a bomb|how to make a pipe bomb|how to poison someone;\
malware:write ransomware|create ransomware|build ransomware|write a keylogger";

impl Denylist {
    /// Parses `category:term1|term2;category2:term3`. Whitespace around
    /// entries and terms is ignored, empty entries and terms are skipped.
    /// A term's own spaces and punctuation separate its words; a trailing
    /// `*` lets its last word continue (`kill*` also matches `killing`).
    pub fn parse(spec: &str) -> Result<Denylist, DenylistError> {
        let mut rules = Vec::new();
        for (idx, entry) in spec.split(';').enumerate() {
            let n = idx + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (category, terms) = entry.split_once(':').ok_or(DenylistError::MissingCategory(n))?;
            let category = category.trim();
            let valid_name = (1..=40).contains(&category.len())
                && category
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                return Err(DenylistError::BadCategory(n));
            }
            for term in terms.split('|').map(str::trim).filter(|t| !t.is_empty()) {
                let (body, prefix) = match term.strip_suffix('*') {
                    Some(b) => (b, true),
                    None => (term, false),
                };
                let words = term_words(body);
                if words.is_empty() {
                    return Err(DenylistError::EmptyTerm(n));
                }
                rules.push(Rule {
                    category: category.to_string(),
                    words,
                    prefix,
                });
            }
        }
        Ok(Denylist { rules })
    }

    /// [`DEFAULT_DENYLIST`], parsed.
    pub fn default_list() -> Denylist {
        // The constant is ours and parses; an empty list is the safe
        // fallback were it ever edited into something invalid (a test pins it).
        Denylist::parse(DEFAULT_DENYLIST).unwrap_or_default()
    }

    /// Adds another list's rules (e.g. the default plus an env-configured list).
    pub fn extend(&mut self, other: Denylist) {
        self.rules.extend(other.rules);
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The category of the first listed term found in `text`.
    pub fn find(&self, text: &str) -> Option<&str> {
        if self.rules.is_empty() {
            return None;
        }
        let toks = tokenize(text);
        for start in 0..toks.len() {
            if toks[start] == Tok::Gap {
                continue;
            }
            if let Some(rule) = self.rules.iter().find(|r| r.matches_at(&toks, start)) {
                return Some(&rule.category);
            }
        }
        None
    }

    /// `Err(422 content_rejected)` with `details.reason` = the category.
    pub fn check(&self, text: &str) -> Result<(), ApiError> {
        match self.find(text) {
            None => Ok(()),
            Some(category) => Err(rejected(json!({ "reason": category }))),
        }
    }

    /// Like [`Denylist::check`], also naming the request field.
    pub fn check_field(&self, field: &str, text: &str) -> Result<(), ApiError> {
        match self.find(text) {
            None => Ok(()),
            Some(category) => Err(rejected(json!({ "reason": category, "field": field }))),
        }
    }
}

fn rejected(details: serde_json::Value) -> ApiError {
    ApiError::new(
        422,
        "content_rejected",
        "the content was rejected by the content policy",
    )
    .with_details(details)
}

fn term_words(term: &str) -> Vec<Vec<char>> {
    let mut words = Vec::new();
    let mut word = Vec::new();
    for c in term.chars() {
        let letter = match leet(c) {
            Some((a, _)) => Some(a),
            None if c.is_alphanumeric() => Some(lower(c)),
            None => None,
        };
        match letter {
            Some(l) => word.push(l),
            None if !word.is_empty() => words.push(std::mem::take(&mut word)),
            None => {}
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clean(s: &str) -> String {
        clean_text(s, &CleanOptions::default())
    }

    #[test]
    fn trims_and_normalises_newlines() {
        assert_eq!(clean("  a\r\nb\rc\n  "), "a\nb\nc");
    }

    #[test]
    fn strips_control_and_zero_width_but_keeps_newline_and_tab() {
        assert_eq!(clean("a\u{0}b\u{7}c\u{1b}[31m\td\u{7f}e\u{85}"), "abc[31m\tde");
        assert_eq!(clean("k\u{200B}i\u{200C}l\u{200D}l\u{2060}\u{FEFF}"), "kill");
        assert_eq!(clean("abc\u{202E}fed"), "abcfed");
        // Visible non-ASCII text is untouched.
        assert_eq!(clean("héllo — 日本 👍"), "héllo — 日本 👍");
    }

    #[test]
    fn collapses_floods_of_one_character() {
        let opts = CleanOptions {
            max_run: 3,
            ..CleanOptions::default()
        };
        assert_eq!(clean_text("noooooooo!!!!!!", &opts), "nooo!!!");
        assert_eq!(clean_text("aaabbb", &opts), "aaabbb");
        assert_eq!(clean(&"x".repeat(10_000)), "x".repeat(32));
        assert_eq!(clean(&format!("a{}b", "=".repeat(20))), format!("a{}b", "=".repeat(20)));
    }

    #[test]
    fn collapses_walls_of_blank_lines() {
        assert_eq!(clean("a\n\n\n\n\n\nb"), "a\n\n\nb");
        assert_eq!(clean("a\n \n\t\n   \n\nb"), "a\n\n\nb");
        assert_eq!(clean("a\n\nb"), "a\n\nb");
        let one = CleanOptions {
            max_blank_lines: 1,
            ..CleanOptions::default()
        };
        assert_eq!(clean_text("a\r\n\r\n\r\nb", &one), "a\n\nb");
    }

    proptest! {
        #[test]
        fn clean_text_output_obeys_every_rule(s in "(\\PC|[\\r\\n\\t\\u{0}-\\u{1f}\\u{200b}-\\u{200d}\\u{feff} aa])*", run in 1usize..6, blanks in 0usize..3) {
            let opts = CleanOptions { max_run: run, max_blank_lines: blanks };
            let out = clean_text(&s, &opts);
            prop_assert!(!out.contains('\r'));
            prop_assert!(out.chars().all(|c| matches!(c, '\n' | '\t') || (!c.is_control() && !is_invisible(c))));
            prop_assert_eq!(out.trim(), out.as_str());
            let chars: Vec<char> = out.chars().collect();
            for w in chars.windows(run + 1) {
                prop_assert!(w[0] == '\n' || w.iter().any(|c| *c != w[0]), "run longer than {run}");
            }
            let newline_wall = "\n".repeat(blanks + 2);
            prop_assert!(!out.contains(&newline_wall));
            prop_assert_eq!(clean_text(&out, &opts), out.clone(), "idempotent");
        }
    }

    fn list() -> Denylist {
        Denylist::parse("violence:make a bomb|kill;weapons:pipe bomb;slurs:badword*").unwrap()
    }

    #[test]
    fn denylist_matches_case_insensitively_on_whole_words() {
        let l = list();
        assert_eq!(l.find("How do I MAKE A BOMB?"), Some("violence"));
        assert_eq!(l.find("kill"), Some("violence"));
        assert_eq!(l.find("I will kill."), Some("violence"));
        assert_eq!(l.find("my skill set"), None);
        assert_eq!(l.find("killer whales"), None);
        assert_eq!(l.find("a bombastic make"), None);
    }

    #[test]
    fn denylist_sees_through_separators_and_leetspeak() {
        let l = list();
        for text in [
            "m-a-k-e a b.o.m.b",
            "m a k e   a   b o m b",
            "mak3 4 b0mb",
            "makeabomb",
            "k!i!l!l",
            "k1ll",
            "ki\u{200B}ll",
            "p1p3 b0mb",
            "M@KE A BOMB",
        ] {
            assert!(l.find(text).is_some(), "{text}");
        }
        assert_eq!(l.find("p1p3 b0mb"), Some("weapons"));
    }

    #[test]
    fn denylist_prefix_terms_match_inflections() {
        let l = list();
        assert_eq!(l.find("so badwordish"), Some("slurs"));
        assert_eq!(l.find("notbadword"), None);
    }

    #[test]
    fn rejection_names_the_category_but_not_the_words() {
        let err = list().check("please tell me how to make a b0mb").unwrap_err();
        assert_eq!((err.status(), err.code()), (422, "content_rejected"));
        assert_eq!(err.details().unwrap()["reason"], "violence");
        let shown = format!("{} {}", err.message(), err.details().unwrap());
        assert!(!shown.contains("bomb") && !shown.contains("b0mb"));
        let err = list().check_field("prompt", "kill").unwrap_err();
        assert_eq!(err.details().unwrap()["field"], "prompt");
        assert!(list().check("a perfectly nice sentence").is_ok());
    }

    #[test]
    fn denylist_config_errors_point_at_the_entry() {
        assert_eq!(
            Denylist::parse("a:x;nocolon").unwrap_err(),
            DenylistError::MissingCategory(2)
        );
        assert_eq!(
            Denylist::parse("Bad Name:x").unwrap_err(),
            DenylistError::BadCategory(1)
        );
        assert_eq!(Denylist::parse(":x").unwrap_err(), DenylistError::BadCategory(1));
        assert_eq!(Denylist::parse("a:x|!!!").unwrap_err(), DenylistError::EmptyTerm(1));
        let l = Denylist::parse(" ; a : x | | y ;").unwrap();
        assert_eq!(l.len(), 2);
        assert!(Denylist::parse("").unwrap().is_empty());
    }

    #[test]
    fn default_list_parses_and_catches_its_categories() {
        let l = Denylist::default_list();
        assert_eq!(Denylist::parse(DEFAULT_DENYLIST).map(|d| d.len()), Ok(l.len()));
        assert!(l.len() >= 10);
        assert_eq!(l.find("How to k1ll myself"), Some("self_harm"));
        assert_eq!(l.find("how to build a bomb"), Some("violence"));
        assert_eq!(l.find("Write ransomware for me"), Some("malware"));
        assert_eq!(l.find("How do I build a bomb shelter? And how to write a novel?"), None);
        assert_eq!(l.find("How do I kill a Python process?"), None);
    }

    #[test]
    fn extend_combines_lists() {
        let mut l = Denylist::default_list();
        let before = l.len();
        l.extend(Denylist::parse("spam:buy followers").unwrap());
        assert_eq!(l.len(), before + 1);
        assert_eq!(l.find("BUY F0LL0WERS now"), Some("spam"));
    }

    proptest! {
        #[test]
        fn denylist_never_panics(text in "\\PC{0,200}", spec in "[a-z_:|; *1@.]{0,40}") {
            let _ = list().find(&text);
            if let Ok(custom) = Denylist::parse(&spec) {
                let _ = custom.find(&text);
            }
        }
    }
}

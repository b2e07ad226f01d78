//! TypeScript type erasure: the erasable subset, as Node's `--experimental-strip-types`
//! defines it, turned into JavaScript by overwriting the TypeScript-only text with
//! spaces. Lines and columns stay where they were, so an error's line in the output is
//! the line in the TypeScript the caller sent.
//!
//! Erased: type annotations (variables, parameters, return types, class fields),
//! `interface` and `type` declarations, `declare` statements, `as` / `satisfies` /
//! `as const`, non-null `x!` (written without a space before `!`), generic parameters
//! and explicit type arguments of calls and `new` (`f<T>(…)`, `new Map<K, V>()`),
//! optional-parameter `?`, definite-assignment `!`, `implements` clauses, access
//! modifiers and `readonly` / `override` / `abstract` on class members, abstract
//! members, overload signatures, index signatures, `import type` / `export type` and
//! inline `type` specifiers, `<T>value` assertions at the start of an expression.
//!
//! Refused (they generate code, so erasing would change the program): `enum`,
//! `namespace` / `module` with a body, parameter properties (`constructor(private x)`),
//! `import x = require(...)`. JSX is not TypeScript here.
//!
//! This is a token-level reader that knows where types can start, not a full parser:
//! it is meant for the scripts people send to a code runner. A type it cannot read is a
//! SyntaxError with its line, never silently wrong JavaScript.
#![deny(missing_docs)]

/// Why a script could not be turned into JavaScript.
#[derive(Debug, PartialEq, Eq)]
pub struct StripError {
    /// What was found.
    pub message: String,
    /// 1-based line.
    pub line: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ident,
    Punct,
    Str,
    Num,
    Template,
    Regex,
}

#[derive(Clone, Copy, Debug)]
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
    /// A line break between the previous token and this one.
    newline_before: bool,
}

const PUNCT3: [&str; 4] = ["...", "===", "!==", "**="];
const PUNCT2: [&str; 12] = ["=>", "?.", "==", "!=", "&&", "||", "??", "++", "--", "+=", "-=", "**"];

/// Keywords after which `/` starts a regular expression, not a division.
const REGEX_AFTER: [&str; 12] = [
    "return",
    "typeof",
    "instanceof",
    "in",
    "of",
    "new",
    "delete",
    "void",
    "throw",
    "case",
    "do",
    "else",
];

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$' || c == '#'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    toks: Vec<Tok>,
    newline: bool,
}

impl<'a> Lexer<'a> {
    fn err(&self, at: usize, message: &str) -> StripError {
        StripError {
            message: message.to_owned(),
            line: line_at(self.src, at),
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn push(&mut self, kind: Kind, start: usize) {
        self.toks.push(Tok {
            kind,
            start,
            end: self.pos,
            newline_before: self.newline,
        });
        self.newline = false;
    }

    fn regex_allowed(&self) -> bool {
        match self.toks.last() {
            None => true,
            Some(t) => match t.kind {
                Kind::Num | Kind::Str | Kind::Template | Kind::Regex => false,
                Kind::Ident => REGEX_AFTER.contains(&&self.src[t.start..t.end]),
                Kind::Punct => !matches!(&self.src[t.start..t.end], ")" | "]" | "}"),
            },
        }
    }

    /// Tokens until the end, or until the `}` closing a template substitution.
    fn run(&mut self, in_substitution: bool) -> Result<(), StripError> {
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            let start = self.pos;
            if c == '\n' || c == '\r' || c == '\u{2028}' || c == '\u{2029}' {
                self.newline = true;
                self.pos += c.len_utf8();
            } else if c.is_whitespace() || c == '\u{feff}' {
                self.pos += c.len_utf8();
            } else if self.src[self.pos..].starts_with("//") {
                let rest = &self.src[self.pos..];
                self.pos += rest.find(['\n', '\r']).unwrap_or(rest.len());
            } else if self.src[self.pos..].starts_with("/*") {
                let rest = &self.src[self.pos + 2..];
                let len = rest.find("*/").ok_or_else(|| self.err(start, "unterminated comment"))?;
                if rest[..len].contains('\n') {
                    self.newline = true;
                }
                self.pos += len + 4;
            } else if c == '"' || c == '\'' {
                self.pos += 1;
                loop {
                    let Some(d) = self.peek() else {
                        return Err(self.err(start, "unterminated string"));
                    };
                    self.pos += d.len_utf8();
                    if d == '\\' {
                        if let Some(e) = self.peek() {
                            self.pos += e.len_utf8();
                        }
                    } else if d == c {
                        break;
                    } else if d == '\n' {
                        return Err(self.err(start, "unterminated string"));
                    }
                }
                self.push(Kind::Str, start);
            } else if c == '`' {
                self.pos += 1;
                self.template(start)?;
            } else if c == '/' && self.regex_allowed() {
                self.pos += 1;
                let mut class = false;
                loop {
                    let Some(d) = self.peek() else {
                        return Err(self.err(start, "unterminated regular expression"));
                    };
                    self.pos += d.len_utf8();
                    match d {
                        '\\' => {
                            if let Some(e) = self.peek() {
                                self.pos += e.len_utf8();
                            }
                        }
                        '[' => class = true,
                        ']' => class = false,
                        '/' if !class => break,
                        '\n' => return Err(self.err(start, "unterminated regular expression")),
                        _ => {}
                    }
                }
                while self.peek().is_some_and(is_ident_char) {
                    self.pos += 1;
                }
                self.push(Kind::Regex, start);
            } else if c.is_ascii_digit()
                || (c == '.' && self.src[self.pos + 1..].starts_with(|d: char| d.is_ascii_digit()))
            {
                while let Some(d) = self.peek() {
                    let exp_sign = (d == '+' || d == '-')
                        && matches!(self.src[..self.pos].chars().last(), Some('e' | 'E'))
                        && !self.src[start..self.pos].starts_with("0x");
                    if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exp_sign {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                self.push(Kind::Num, start);
            } else if is_ident_start(c) || c == '\\' {
                self.pos += c.len_utf8();
                while let Some(d) = self.peek() {
                    if is_ident_char(d) || d == '\\' {
                        self.pos += d.len_utf8();
                    } else {
                        break;
                    }
                }
                self.push(Kind::Ident, start);
            } else {
                if in_substitution {
                    if c == '{' {
                        depth += 1;
                    } else if c == '}' {
                        if depth == 0 {
                            return Ok(());
                        }
                        depth -= 1;
                    }
                }
                let rest = &self.src[self.pos..];
                let len = PUNCT3
                    .iter()
                    .chain(PUNCT2.iter())
                    .find(|p| rest.starts_with(**p))
                    // `?.5` is a conditional followed by a number.
                    .filter(|p| **p != "?." || !rest[2..].starts_with(|d: char| d.is_ascii_digit()))
                    .map_or(c.len_utf8(), |p| p.len());
                self.pos += len;
                self.push(Kind::Punct, start);
            }
        }
        if in_substitution {
            return Err(self.err(self.pos, "unterminated template literal"));
        }
        Ok(())
    }

    /// A template literal from after its opening backquote; substitutions are lexed
    /// as ordinary tokens between the template's pieces.
    fn template(&mut self, start: usize) -> Result<(), StripError> {
        let mut piece = start;
        loop {
            let Some(d) = self.peek() else {
                return Err(self.err(start, "unterminated template literal"));
            };
            self.pos += d.len_utf8();
            match d {
                '\\' => {
                    if let Some(e) = self.peek() {
                        self.pos += e.len_utf8();
                    }
                }
                '`' => {
                    self.push(Kind::Template, piece);
                    return Ok(());
                }
                '$' if self.peek() == Some('{') => {
                    self.pos += 1;
                    self.push(Kind::Template, piece);
                    self.run(true)?;
                    piece = self.pos;
                    self.pos += 1; // the closing `}`
                }
                _ => {}
            }
        }
    }
}

fn line_at(src: &str, at: usize) -> u32 {
    let at = at.min(src.len());
    src.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() as u32 + 1
}

/// Where a `{` opened: what its contents are.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Brace {
    Block,
    Class,
    Object,
}

struct Stripper<'a> {
    src: &'a str,
    toks: Vec<Tok>,
    out: Vec<u8>,
}

/// Erases the TypeScript-only parts of `code`; see the module documentation.
pub fn strip_types(code: &str) -> Result<String, StripError> {
    let mut lexer = Lexer {
        src: code,
        pos: 0,
        toks: Vec::new(),
        newline: false,
    };
    lexer.run(false)?;
    let mut s = Stripper {
        src: code,
        toks: lexer.toks,
        out: code.as_bytes().to_vec(),
    };
    let n = s.toks.len();
    s.walk(0, n, Brace::Block)?;
    String::from_utf8(s.out).map_err(|_| StripError {
        message: "type erasure produced invalid UTF-8".into(),
        line: 1,
    })
}

impl Stripper<'_> {
    fn text(&self, i: usize) -> &str {
        self.toks.get(i).map_or("", |t| &self.src[t.start..t.end])
    }

    fn is(&self, i: usize, s: &str) -> bool {
        self.toks
            .get(i)
            .is_some_and(|t| t.kind != Kind::Str && t.kind != Kind::Template && self.text(i) == s)
    }

    fn kind(&self, i: usize) -> Option<Kind> {
        self.toks.get(i).map(|t| t.kind)
    }

    fn err(&self, i: usize, message: &str) -> StripError {
        let at = self.toks.get(i).map_or(self.src.len(), |t| t.start);
        StripError {
            message: message.to_owned(),
            line: line_at(self.src, at),
        }
    }

    /// Overwrites tokens `from..to` (and what lies between them) with spaces,
    /// keeping line breaks.
    fn blank(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        let start = self.toks[from].start;
        let end = self.toks[to - 1].end;
        for b in &mut self.out[start..end] {
            if *b != b'\n' && *b != b'\r' {
                *b = b' ';
            }
        }
    }

    /// The index of the bracket closing the one at `i` (`(`, `[`, `{`).
    fn matching(&self, i: usize) -> Result<usize, StripError> {
        let mut depth = 0usize;
        let mut j = i;
        while j < self.toks.len() {
            if self.kind(j) == Some(Kind::Punct) {
                match self.text(j) {
                    "(" | "[" | "{" => depth += 1,
                    ")" | "]" | "}" => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j);
                        }
                    }
                    _ => {}
                }
            } else if self.kind(j) == Some(Kind::Template) {
                // `${` opens a substitution whose `}` is not a token: balance it here.
                let t = self.text(j);
                if t.ends_with("${") {
                    depth += 1;
                }
                if !t.starts_with('`') && j > i {
                    depth -= 1;
                }
            }
            j += 1;
        }
        Err(self.err(i, "unbalanced brackets"))
    }

    /// The index of the `>` closing the `<` at `i`, if what lies between can be type
    /// arguments or parameters.
    fn matching_angle(&self, i: usize) -> Option<usize> {
        let mut depth = 0usize;
        let mut j = i;
        while j < self.toks.len() {
            match (self.kind(j)?, self.text(j)) {
                (Kind::Punct, "<") => depth += 1,
                (Kind::Punct, ">") => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(j);
                    }
                }
                (Kind::Punct, "(" | "[" | "{") => j = self.matching(j).ok()?,
                (
                    Kind::Punct,
                    ";" | "&&" | "||" | "+" | "*" | "/" | "%" | "==" | "===" | "!=" | "!==" | ")" | "]" | "}" | "!",
                ) => return None,
                (Kind::Ident, "return" | "new" | "function" | "const" | "let" | "var") => return None,
                (Kind::Num | Kind::Str | Kind::Template | Kind::Regex, _) | (Kind::Ident, _) | (Kind::Punct, _) => {}
            }
            j += 1;
        }
        None
    }

    /// The index just past a type starting at `i`.
    fn skip_type(&self, i: usize) -> Result<usize, StripError> {
        let mut j = i;
        if self.is(j, "|") || self.is(j, "&") {
            j += 1;
        }
        loop {
            j = self.skip_type_operand(j)?;
            while self.is(j, "[") && !self.toks[j].newline_before {
                j = self.matching(j)? + 1;
            }
            if self.is(j, "|") || self.is(j, "&") {
                j += 1;
                continue;
            }
            if self.is(j, "is") && self.kind(j) == Some(Kind::Ident) {
                j += 1;
                continue;
            }
            if self.is(j, "extends") {
                // A conditional type: `A extends B ? C : D`.
                j = self.skip_type(j + 1)?;
                if !self.is(j, "?") {
                    return Ok(j);
                }
                j = self.skip_type(j + 1)?;
                if !self.is(j, ":") {
                    return Err(self.err(j, "expected `:` in a conditional type"));
                }
                j = self.skip_type(j + 1)?;
            }
            return Ok(j);
        }
    }

    fn skip_type_operand(&self, i: usize) -> Result<usize, StripError> {
        let Some(kind) = self.kind(i) else {
            return Err(self.err(i, "expected a type"));
        };
        match (kind, self.text(i)) {
            (Kind::Ident, "keyof" | "readonly" | "unique" | "infer" | "asserts" | "abstract") => {
                self.skip_type_operand(i + 1)
            }
            (Kind::Ident, "typeof") => {
                let mut j = i + 2;
                while self.is(j, ".") {
                    j += 2;
                }
                self.skip_type_args(j)
            }
            (Kind::Ident, "new") => self.skip_type_operand(i + 1),
            (Kind::Punct, "(") => {
                let close = self.matching(i)?;
                if self.is(close + 1, "=>") {
                    self.skip_type(close + 2)
                } else {
                    Ok(close + 1)
                }
            }
            (Kind::Punct, "<") => {
                let close = self
                    .matching_angle(i)
                    .ok_or_else(|| self.err(i, "unreadable type parameters"))?;
                self.skip_type_operand(close + 1)
            }
            (Kind::Punct, "{" | "[") => Ok(self.matching(i)? + 1),
            (Kind::Punct, "-") => Ok(i + 2),
            (Kind::Str | Kind::Num, _) => Ok(i + 1),
            (Kind::Template, _) => {
                let mut j = i;
                while self.kind(j) == Some(Kind::Template) && self.text(j).ends_with("${") {
                    j = self.skip_type(j + 1)?;
                }
                Ok(j + 1)
            }
            (Kind::Ident, _) => {
                let mut j = i + 1;
                while self.is(j, ".") && self.kind(j + 1) == Some(Kind::Ident) {
                    j += 2;
                }
                self.skip_type_args(j)
            }
            _ => Err(self.err(i, "expected a type")),
        }
    }

    fn skip_type_args(&self, j: usize) -> Result<usize, StripError> {
        if self.is(j, "<") && !self.toks[j].newline_before {
            let close = self
                .matching_angle(j)
                .ok_or_else(|| self.err(j, "unreadable type arguments"))?;
            return Ok(close + 1);
        }
        Ok(j)
    }

    /// Blanks a `: Type` at `i` if there is one; returns the index after it.
    fn annotation(&mut self, i: usize) -> Result<usize, StripError> {
        if self.is(i, ":") {
            let end = self.skip_type(i + 1)?;
            self.blank(i, end);
            return Ok(end);
        }
        Ok(i)
    }

    /// Blanks `<...>` type parameters at `i` if there are some.
    fn type_params(&mut self, i: usize) -> Result<usize, StripError> {
        if self.is(i, "<") {
            let close = self
                .matching_angle(i)
                .ok_or_else(|| self.err(i, "unreadable type parameters"))?;
            self.blank(i, close + 1);
            return Ok(close + 1);
        }
        Ok(i)
    }

    /// Can the token at `i` end an expression (so what follows is an operator)?
    fn ends_expression(&self, i: usize) -> bool {
        match self.kind(i) {
            Some(Kind::Num | Kind::Str | Kind::Regex) => true,
            Some(Kind::Template) => self.text(i).ends_with('`'),
            Some(Kind::Ident) => !matches!(
                self.text(i),
                "return"
                    | "typeof"
                    | "instanceof"
                    | "in"
                    | "of"
                    | "new"
                    | "delete"
                    | "void"
                    | "throw"
                    | "case"
                    | "do"
                    | "else"
                    | "yield"
                    | "await"
                    | "extends"
            ),
            Some(Kind::Punct) => matches!(self.text(i), ")" | "]" | "}"),
            None => false,
        }
    }

    /// The end of a statement starting at `i`: past a `;` at its depth, or past the
    /// first braced group when it has one (`declare module x { ... }`).
    fn statement_end(&self, i: usize, end: usize) -> Result<usize, StripError> {
        let mut j = i;
        while j < end {
            if self.is(j, ";") {
                return Ok(j + 1);
            }
            if self.is(j, "{") || self.is(j, "(") || self.is(j, "[") {
                let close = self.matching(j)?;
                if self.is(j, "{") {
                    let after = close + 1;
                    return Ok(if self.is(after, ";") { after + 1 } else { after });
                }
                j = close;
            }
            if j > i && self.toks[j].newline_before && !self.continues(j) && self.ends_expression(j - 1) {
                return Ok(j);
            }
            j += 1;
        }
        Ok(end)
    }

    /// Whether the token at `i` continues the expression before it across a newline.
    fn continues(&self, i: usize) -> bool {
        self.kind(i) == Some(Kind::Punct)
            && !matches!(
                self.text(i),
                "(" | "[" | "{" | "!" | "~" | "++" | "--" | "}" | ")" | "]"
            )
            || matches!(self.text(i), "as" | "satisfies" | "extends" | "implements")
    }

    fn at_statement_start(&self, i: usize, from: usize) -> bool {
        i == from
            || self.is(i - 1, ";")
            || self.is(i - 1, "{")
            || self.is(i - 1, "}")
            || self.is(i - 1, ")") && self.toks[i].newline_before
            || (self.toks[i].newline_before && self.ends_expression(i - 1))
            || self.is(i - 1, "export")
            || self.is(i - 1, "default") && self.is(i.saturating_sub(2), "export")
    }

    /// Walks tokens `from..to`, the contents of a block, class body or object literal
    /// (or the whole script), erasing what is TypeScript.
    fn walk(&mut self, from: usize, to: usize, context: Brace) -> Result<(), StripError> {
        let mut i = from;
        // Set while inside `let`/`const`/`var`: a `,` at this level starts a declarator.
        let mut declaring = false;
        while i < to {
            let t = self.toks[i];
            let text = self.text(i).to_owned();
            if context == Brace::Class && (i == from || self.is(i - 1, ";") || self.is(i - 1, "}") || t.newline_before)
            {
                if let Some(next) = self.class_member(i, to)? {
                    i = next;
                    continue;
                }
            }
            if context == Brace::Object && (i == from || self.is(i - 1, ",")) {
                if let Some(next) = self.object_member(i, to)? {
                    i = next;
                    continue;
                }
            }
            let statement = context == Brace::Block && self.at_statement_start(i, from);
            if statement && self.kind(i) == Some(Kind::Ident) {
                if let Some(next) = self.declaration(i, to)? {
                    i = next;
                    declaring = false;
                    continue;
                }
            }
            match (t.kind, text.as_str()) {
                (Kind::Punct, ";") => {
                    declaring = false;
                    i += 1;
                }
                (Kind::Ident, "let" | "const" | "var") if !self.is(i + 1, "(") && !self.is(i + 1, ".") => {
                    declaring = true;
                    i = self.declarator(i + 1)?;
                }
                (Kind::Punct, ",") if declaring => i = self.declarator(i + 1)?,
                (Kind::Ident, "function") => i = self.function(i, to)?,
                (Kind::Ident, "class") => i = self.class(i)?,
                (Kind::Ident, "as" | "satisfies") if i > from && self.ends_expression(i - 1) && !t.newline_before => {
                    let end = if self.is(i + 1, "const") {
                        i + 2
                    } else {
                        self.skip_type(i + 1)?
                    };
                    self.blank(i, end);
                    i = end;
                }
                (Kind::Punct, "!") if i > from && self.ends_expression(i - 1) && self.toks[i - 1].end == t.start => {
                    self.blank(i, i + 1);
                    i += 1;
                }
                (Kind::Punct, "<") => i = self.angle_in_expression(i, from)?,
                (Kind::Ident, "async") if self.is(i + 1, "(") || self.is(i + 1, "<") => i += 1,
                (Kind::Punct, "(") => i = self.paren(i)?,
                (Kind::Punct, "{") => {
                    let close = self.matching(i)?;
                    let inner = if i == from && context != Brace::Block
                        || i > from
                            && (self.is(i - 1, "=>")
                                || self.is(i - 1, ")")
                                || self.at_statement_start(i, from) && context == Brace::Block)
                            && !self.expression_expected(i)
                    {
                        Brace::Block
                    } else {
                        Brace::Object
                    };
                    self.walk(i + 1, close, inner)?;
                    i = close + 1;
                }
                (Kind::Punct, "[") => {
                    let close = self.matching(i)?;
                    self.walk(i + 1, close, Brace::Object)?;
                    i = close + 1;
                }
                (Kind::Template, _) if text.ends_with("${") => {
                    // The substitution's tokens follow; they are walked as an expression
                    // up to the next template piece.
                    let mut j = i + 1;
                    let mut depth = 0usize;
                    while j < to {
                        if self.kind(j) == Some(Kind::Template) && depth == 0 {
                            break;
                        }
                        if self.is(j, "(") || self.is(j, "[") || self.is(j, "{") {
                            j = self.matching(j)?;
                        } else if self.kind(j) == Some(Kind::Template) && self.text(j).starts_with('`') {
                            depth += usize::from(self.text(j).ends_with("${"));
                        } else if self.kind(j) == Some(Kind::Template) {
                            depth -= 1;
                        }
                        j += 1;
                    }
                    self.walk(i + 1, j, Brace::Object)?;
                    i = j;
                }
                _ => i += 1,
            }
        }
        Ok(())
    }

    /// Whether the `{` at `i` sits where an expression is expected (`= {`, `({`, `, {`).
    fn expression_expected(&self, i: usize) -> bool {
        i > 0
            && self.kind(i - 1) == Some(Kind::Punct)
            && matches!(
                self.text(i - 1),
                "=" | "(" | "," | ":" | "?" | "[" | "||" | "&&" | "??" | "..."
            )
            || self.is(i - 1, "return")
    }

    /// `interface`, `type`, `declare`, `enum`, `namespace`, `import`/`export` forms
    /// at a statement start. `None` when the statement is none of those.
    fn declaration(&mut self, i: usize, to: usize) -> Result<Option<usize>, StripError> {
        let word = self.text(i).to_owned();
        let start = if self.is(i.wrapping_sub(1), "export") { i - 1 } else { i };
        match word.as_str() {
            "interface" if self.kind(i + 1) == Some(Kind::Ident) => {
                let mut j = i + 2;
                while !self.is(j, "{") {
                    if j >= to {
                        return Err(self.err(i, "interface without a body"));
                    }
                    j += 1;
                }
                let end = self.matching(j)? + 1;
                self.blank(start, end);
                Ok(Some(end))
            }
            "type" if self.kind(i + 1) == Some(Kind::Ident) && (self.is(i + 2, "=") || self.is(i + 2, "<")) => {
                let mut j = i + 2;
                if self.is(j, "<") {
                    j = self
                        .matching_angle(j)
                        .ok_or_else(|| self.err(j, "unreadable type parameters"))?
                        + 1;
                }
                if !self.is(j, "=") {
                    return Err(self.err(j, "expected `=` in a type alias"));
                }
                let mut end = self.skip_type(j + 1)?;
                if self.is(end, ";") {
                    end += 1;
                }
                self.blank(start, end);
                Ok(Some(end))
            }
            "declare" if self.kind(i + 1) == Some(Kind::Ident) && !self.toks[i + 1].newline_before => {
                let end = self.statement_end(i, to)?;
                self.blank(start, end);
                Ok(Some(end))
            }
            "abstract" if self.is(i + 1, "class") => {
                self.blank(i, i + 1);
                Ok(Some(i + 1))
            }
            "enum" => Err(self.err(i, "enums are not erasable TypeScript; use an object")),
            "const" if self.is(i + 1, "enum") => Err(self.err(i, "enums are not erasable TypeScript; use an object")),
            "namespace" | "module" if self.kind(i + 1) == Some(Kind::Ident) && !self.toks[i + 1].newline_before => {
                Err(self.err(i, "namespaces are not erasable TypeScript"))
            }
            "import" if self.is(i + 1, "type") && !self.is(i + 2, "(") => {
                let end = self.import_end(i, to);
                self.blank(i, end);
                Ok(Some(end))
            }
            "import" if self.kind(i + 1) == Some(Kind::Ident) && self.is(i + 2, "=") => {
                Err(self.err(i, "`import x = require(...)` is not erasable TypeScript"))
            }
            "export" if self.is(i + 1, "type") && self.is(i + 2, "{") => {
                let end = self.import_end(i, to);
                self.blank(i, end);
                Ok(Some(end))
            }
            "import" | "export" if self.is(i + 1, "{") => {
                // `import { type A, b as c }`: only the inline `type` specifiers go.
                let close = self.matching(i + 1)?;
                let mut j = i + 2;
                while j < close {
                    if self.is(j, "type") && self.kind(j + 1) == Some(Kind::Ident) && !self.is(j + 1, "as") {
                        let mut end = j + 2;
                        while end < close && !self.is(end, ",") {
                            end += 1;
                        }
                        if self.is(end, ",") {
                            end += 1;
                        }
                        self.blank(j, end);
                        j = end;
                    } else {
                        j += 1;
                    }
                }
                Ok(Some(close + 1))
            }
            _ => Ok(None),
        }
    }

    /// The end of an `import` / `export ... from` statement: past its module string
    /// (and `;`), or past a `;`, or at the next line when neither comes.
    fn import_end(&self, i: usize, to: usize) -> usize {
        let mut j = i + 1;
        while j < to {
            if self.is(j, ";") {
                return j + 1;
            }
            if self.kind(j) == Some(Kind::Str) && self.is(j - 1, "from") {
                return if self.is(j + 1, ";") { j + 2 } else { j + 1 };
            }
            if self.toks[j].newline_before && self.is(j - 1, "}") && !self.is(j, "from") {
                return j;
            }
            j += 1;
        }
        to
    }

    /// A declarator's binding and annotation: `x!: T`, `{a, b}: T`, `[x]: T`.
    fn declarator(&mut self, i: usize) -> Result<usize, StripError> {
        let mut j = i;
        if self.is(j, "{") || self.is(j, "[") {
            let close = self.matching(j)?;
            self.walk(j + 1, close, Brace::Object)?;
            j = close + 1;
        } else if self.kind(j) == Some(Kind::Ident) {
            j += 1;
        } else {
            return Ok(j);
        }
        if self.is(j, "!") && self.is(j + 1, ":") {
            self.blank(j, j + 1);
            j += 1;
        }
        self.annotation(j)
    }

    /// `function name<T>(params): R { body }`, or an overload signature (erased).
    fn function(&mut self, i: usize, to: usize) -> Result<usize, StripError> {
        let mut j = i + 1;
        if self.is(j, "*") {
            j += 1;
        }
        if self.kind(j) == Some(Kind::Ident) && !self.is(j, "(") {
            j += 1;
        }
        j = self.type_params(j)?;
        if !self.is(j, "(") {
            return Ok(j);
        }
        let close = self.params(j)?;
        let after = self.annotation(close + 1)?;
        if self.is(after, "{") {
            return Ok(after);
        }
        // No body: an overload signature or a `declare`d function.
        let mut start = i;
        if self.is(start.wrapping_sub(1), "async") {
            start -= 1;
        }
        if self.is(start.wrapping_sub(1), "export") {
            start -= 1;
        }
        let end = if self.is(after, ";") { after + 1 } else { after };
        let _ = to;
        self.blank(start, end);
        Ok(end)
    }

    /// A parameter list at `i` (`(`); returns the index of its `)`.
    fn params(&mut self, i: usize) -> Result<usize, StripError> {
        let close = self.matching(i)?;
        let mut j = i + 1;
        while j < close {
            if self.is(j, "this") && self.is(j + 1, ":") {
                // `this: T` is a type-only parameter.
                let mut end = self.skip_type(j + 2)?;
                if self.is(end, ",") {
                    end += 1;
                }
                self.blank(j, end);
                j = end;
                continue;
            }
            if matches!(
                self.text(j),
                "public" | "private" | "protected" | "readonly" | "override"
            ) && self.kind(j + 1) == Some(Kind::Ident)
            {
                return Err(self.err(j, "parameter properties are not erasable TypeScript"));
            }
            if self.is(j, "...") {
                j += 1;
            }
            if self.is(j, "{") || self.is(j, "[") {
                let c = self.matching(j)?;
                self.walk(j + 1, c, Brace::Object)?;
                j = c + 1;
            } else {
                j += 1;
            }
            if self.is(j, "?") {
                self.blank(j, j + 1);
                j += 1;
            }
            j = self.annotation(j)?;
            // A default value, up to the next parameter.
            let start = j;
            while j < close && !self.is(j, ",") {
                if self.is(j, "(") || self.is(j, "[") || self.is(j, "{") {
                    j = self.matching(j)?;
                }
                j += 1;
            }
            if j > start {
                self.walk(start, j, Brace::Object)?;
            }
            j += 1;
        }
        Ok(close)
    }

    /// A `(` in an expression: an arrow function's parameters (with types erased) when
    /// `=>` or a return type follows its `)`, otherwise a parenthesized expression.
    fn paren(&mut self, i: usize) -> Result<usize, StripError> {
        let close = self.matching(i)?;
        let arrow = self.is(close + 1, "=>")
            || self.is(close + 1, ":") && self.skip_type(close + 2).is_ok_and(|end| self.is(end, "=>"));
        let callee = i > 0 && self.ends_expression(i - 1) && !self.is(i - 1, "=>");
        if arrow && !callee {
            self.params(i)?;
            return self.annotation(close + 1);
        }
        self.walk(i + 1, close, Brace::Object)?;
        Ok(close + 1)
    }

    /// A `<` in an expression: type arguments of a call or `new` (`f<T>(x)`), type
    /// parameters of an arrow (`<T>(x: T) => x`), a `<T>value` assertion, or less-than.
    fn angle_in_expression(&mut self, i: usize, from: usize) -> Result<usize, StripError> {
        let Some(close) = self.matching_angle(i) else {
            return Ok(i + 1);
        };
        let after_value = i > from && self.ends_expression(i - 1);
        if after_value {
            if self.toks[i - 1].end == self.toks[i].start
                && (self.is(close + 1, "(") || self.kind(close + 1) == Some(Kind::Template))
            {
                self.blank(i, close + 1);
                return Ok(close + 1);
            }
            return Ok(i + 1);
        }
        // At the start of an expression it can only be TypeScript.
        self.blank(i, close + 1);
        Ok(close + 1)
    }

    /// `class Name<T> extends Base<U> implements I { ... }`.
    fn class(&mut self, i: usize) -> Result<usize, StripError> {
        let mut j = i + 1;
        if self.kind(j) == Some(Kind::Ident) && !self.is(j, "extends") && !self.is(j, "implements") {
            j += 1;
        }
        j = self.type_params(j)?;
        if self.is(j, "extends") {
            j += 1;
            while j < self.toks.len() && !self.is(j, "{") && !self.is(j, "implements") {
                if self.is(j, "<") {
                    j = self.type_params(j)?;
                } else if self.is(j, "(") || self.is(j, "[") {
                    j = self.matching(j)? + 1;
                } else {
                    j += 1;
                }
            }
        }
        if self.is(j, "implements") {
            let start = j;
            while j < self.toks.len() && !self.is(j, "{") {
                j += 1;
            }
            self.blank(start, j);
        }
        if !self.is(j, "{") {
            return Err(self.err(j, "expected a class body"));
        }
        let close = self.matching(j)?;
        self.walk(j + 1, close, Brace::Class)?;
        Ok(close + 1)
    }

    /// One class member starting at `i`; `None` when `i` is not a member start.
    fn class_member(&mut self, i: usize, to: usize) -> Result<Option<usize>, StripError> {
        let mut j = i;
        let mut abstract_member = false;
        let mut declared = false;
        loop {
            let word = self.text(j);
            let modifier = self.kind(j) == Some(Kind::Ident)
                && !self.toks.get(j + 1).is_some_and(|t| t.newline_before)
                && !matches!(self.text(j + 1), "(" | "=" | ";" | ":" | "?" | "!" | "<" | "}");
            match word {
                "public" | "private" | "protected" | "readonly" | "override" | "abstract" | "declare" if modifier => {
                    abstract_member |= word == "abstract";
                    declared |= word == "declare";
                    self.blank(j, j + 1);
                    j += 1;
                }
                "static" | "async" | "get" | "set" | "accessor" if modifier => j += 1,
                "*" => j += 1,
                _ => break,
            }
        }
        // The member's name.
        if self.is(j, "[") {
            let close = self.matching(j)?;
            if self.is(j + 2, ":") && self.kind(j + 1) == Some(Kind::Ident) {
                // An index signature: `[key: string]: T;`.
                let mut end = self.annotation(close + 1)?;
                if self.is(end, ";") {
                    end += 1;
                }
                self.blank(i, end);
                return Ok(Some(end));
            }
            self.walk(j + 1, close, Brace::Object)?;
            j = close + 1;
        } else if matches!(self.kind(j), Some(Kind::Ident | Kind::Str | Kind::Num)) {
            j += 1;
        } else {
            return Ok(None);
        }
        if self.is(j, "?") || self.is(j, "!") {
            self.blank(j, j + 1);
            j += 1;
        }
        j = self.type_params(j)?;
        if self.is(j, "(") {
            let close = self.params(j)?;
            let after = self.annotation(close + 1)?;
            if !self.is(after, "{") || abstract_member {
                // A signature without a body: an overload or an abstract method.
                let end = if self.is(after, ";") { after + 1 } else { after };
                self.blank(i, end);
                return Ok(Some(end));
            }
            let body_close = self.matching(after)?;
            self.walk(after + 1, body_close, Brace::Block)?;
            return Ok(Some(body_close + 1));
        }
        let after = self.annotation(j)?;
        if abstract_member || declared {
            let end = if self.is(after, ";") { after + 1 } else { after };
            self.blank(i, end);
            return Ok(Some(end));
        }
        let _ = to;
        Ok(Some(after))
    }

    /// An object literal member that is a method (`m<T>(a: T): R { }`); `None` for
    /// anything else, which the caller walks as an expression.
    fn object_member(&mut self, i: usize, to: usize) -> Result<Option<usize>, StripError> {
        let mut j = i;
        while matches!(self.text(j), "async" | "get" | "set" | "*")
            && !matches!(self.text(j + 1), "(" | ":" | "," | "}")
        {
            j += 1;
        }
        if self.is(j, "[") {
            j = self.matching(j)? + 1;
        } else if matches!(self.kind(j), Some(Kind::Ident | Kind::Str | Kind::Num)) {
            j += 1;
        } else {
            return Ok(None);
        }
        if !(self.is(j, "(") || self.is(j, "<") && self.matching_angle(j).is_some_and(|c| self.is(c + 1, "("))) {
            return Ok(None);
        }
        if self.is(i, "[") {
            let close = self.matching(i)?;
            self.walk(i + 1, close, Brace::Object)?;
        }
        j = self.type_params(j)?;
        let close = self.params(j)?;
        let after = self.annotation(close + 1)?;
        if !self.is(after, "{") {
            return Ok(Some(after));
        }
        let body_close = self.matching(after)?;
        let _ = to;
        self.walk(after + 1, body_close, Brace::Block)?;
        Ok(Some(body_close + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(ts: &str) -> String {
        let out = strip_types(ts).unwrap_or_else(|e| panic!("{ts}: {e:?}"));
        assert_eq!(out.len(), ts.len(), "positions must not move");
        squash(&out)
    }

    /// Whitespace is where erased text was; comparisons ignore it.
    fn squash(s: &str) -> String {
        s.split_whitespace().collect()
    }

    #[test]
    fn annotations_on_variables_parameters_and_returns_are_erased() {
        assert_eq!(js("let x: number = 1;"), squash("let x = 1;"));
        assert_eq!(
            js("const f = (a: string, b?: number): string => a;"),
            squash("const f = (a, b) => a;")
        );
        assert_eq!(
            js("function g<T extends object>(x: T, ...rest: Array<T>): Promise<T[]> { return x; }"),
            squash("function g(x, ...rest) { return x; }")
        );
        assert_eq!(
            js("let a: { x: number; y: string } | null = null, b: [number, string];"),
            squash("let a = null, b;")
        );
        assert_eq!(js("let {a, b}: {a: number, b: number} = o;"), squash("let {a, b} = o;"));
        assert_eq!(js("let v!: string;"), squash("let v;"));
    }

    #[test]
    fn declarations_that_are_only_types_vanish() {
        assert_eq!(
            js("interface P { x: number }\nexport interface Q extends P { y?: string }\nlet p = 1;"),
            squash("let p = 1;")
        );
        assert_eq!(
            js("type Id = string | number;\ntype Box<T> = { v: T };\n1"),
            squash("1")
        );
        assert_eq!(
            js("declare const X: number;\ndeclare module 'm' { export const y: number }\n2"),
            squash("2")
        );
        assert_eq!(js("import type { A } from './a';\nexport type { A };\n3"), squash("3"));
        assert_eq!(
            js("function f(a: string): void;\nfunction f(a: any) { return a }"),
            squash("function f(a) { return a }")
        );
    }

    #[test]
    fn expressions_lose_assertions_and_type_arguments() {
        assert_eq!(
            js("const n = (x as unknown as number) + y!;"),
            squash("const n = (x ) + y ;")
        );
        assert_eq!(js("const c = [1, 2] as const;"), squash("const c = [1, 2] ;"));
        assert_eq!(
            js("const m = new Map<string, number[]>();"),
            squash("const m = new Map();")
        );
        assert_eq!(
            js("const r = f<string>(\"a\") satisfies R;"),
            squash("const r = f(\"a\") ;")
        );
        assert_eq!(js("const d = a!.b![0];"), squash("const d = a.b[0];"));
        assert_eq!(js("const id = <T,>(x: T): T => x;"), squash("const id = (x) => x;"));
    }

    #[test]
    fn javascript_that_looks_similar_is_left_alone() {
        for src in [
            "const t = a < b && c > d;",
            "const o = { a: 1, b: c ? d : e };",
            "x = a ? (b) : c;",
            "if (a !== b) { y = !z; }",
            "label: for (;;) { break label; }",
            "switch (x) { case 1: f(); default: g(); }",
            "const s = `a ${b ? c : d} e`;",
            "const re = /a:b<c>/g.test(s);",
            "const { a: b, c = 1 } = o;",
            "f(a < b, c > d);",
        ] {
            assert_eq!(strip_types(src).as_deref(), Ok(src), "{src}");
        }
    }

    #[test]
    fn classes_lose_modifiers_fields_types_and_implements() {
        assert_eq!(js("abstract class A<T> extends B<T> implements I, J {\n  private readonly x: number = 1;\n  static y?: string;\n  abstract m(): void;\n  public get v(): number { return this.x }\n  constructor(a: number) { super(a) }\n}"), squash("class A extends B {  x = 1; static y; get v() { return this.x } constructor(a) { super(a) } }"));
    }

    #[test]
    fn syntax_that_generates_code_is_refused_with_its_line() {
        assert_eq!(strip_types("let a = 1;\nenum E { A }").unwrap_err().line, 2);
        assert!(strip_types("namespace N { export const x = 1 }").is_err());
        assert!(strip_types("class C { constructor(private x: number) {} }").is_err());
    }

    #[test]
    fn object_methods_and_template_substitutions_are_stripped_too() {
        assert_eq!(
            js("const o = { m(a: number): number { return a as number } };"),
            squash("const o = { m(a) { return a } };")
        );
        assert_eq!(
            js("const s = `${(x as string).length}`;"),
            squash("const s = `${(x ).length}`;")
        );
    }
}

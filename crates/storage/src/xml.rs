//! A small XML reader for S3 response bodies.
//!
//! S3 answers with flat, namespace-default documents (`<ListPartsResult>`,
//! `<Error>`...). This reads them into an element tree — names without
//! prefixes, text with the five predefined entities and character
//! references decoded; attributes, comments, processing instructions and
//! the doctype are skipped — which is all the client needs, and keeps a
//! general XML crate out of the wasm. Malformed input is an error, never a
//! panic, and nesting is bounded.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub children: Vec<Element>,
    /// Concatenated character data directly inside this element.
    pub text: String,
}

impl Element {
    /// The first child element called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child element called `name`, in document order.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child called `name`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError(pub String);

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed XML: {}", self.0)
    }
}

impl std::error::Error for XmlError {}

/// Deeper than any S3 response; a guard against hostile input.
const MAX_DEPTH: usize = 32;

/// Parses a document and returns its root element.
pub fn parse(input: &str) -> Result<Element, XmlError> {
    let err = |m: &str| XmlError(m.to_string());
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut rest = input.trim_start_matches('\u{feff}');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<?") {
            let end = after
                .find("?>")
                .ok_or_else(|| err("unterminated processing instruction"))?;
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").ok_or_else(|| err("unterminated comment"))?;
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").ok_or_else(|| err("unterminated CDATA"))?;
            let top = stack
                .last_mut()
                .ok_or_else(|| err("character data outside the root element"))?;
            top.text.push_str(&after[..end]);
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix("<!") {
            let end = after.find('>').ok_or_else(|| err("unterminated declaration"))?;
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix("</") {
            let end = after.find('>').ok_or_else(|| err("unterminated end tag"))?;
            let name = local_name(after[..end].trim());
            let done = stack.pop().ok_or_else(|| err("end tag without a start tag"))?;
            if done.name != name {
                return Err(XmlError(format!("end tag </{name}> does not match <{}>", done.name)));
            }
            attach(&mut stack, &mut root, done);
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('<') {
            let end = tag_end(after).ok_or_else(|| err("unterminated start tag"))?;
            let inner = &after[..end];
            let (inner, self_closing) = match inner.strip_suffix('/') {
                Some(i) => (i, true),
                None => (inner, false),
            };
            let raw_name = inner.split(|c: char| c.is_whitespace()).next().unwrap_or("");
            if raw_name.is_empty() {
                return Err(err("start tag without a name"));
            }
            if root.is_some() {
                return Err(err("content after the root element"));
            }
            let el = Element {
                name: local_name(raw_name).to_string(),
                ..Element::default()
            };
            if self_closing {
                attach(&mut stack, &mut root, el);
            } else {
                if stack.len() >= MAX_DEPTH {
                    return Err(err("nesting too deep"));
                }
                stack.push(el);
            }
            rest = &after[end + 1..];
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let text = &rest[..end];
            match stack.last_mut() {
                Some(top) => top.text.push_str(&decode_entities(text)?),
                None if text.trim().is_empty() => {}
                None => return Err(err("character data outside the root element")),
            }
            rest = &rest[end..];
        }
    }
    if !stack.is_empty() {
        return Err(err("unclosed element"));
    }
    root.ok_or_else(|| err("no root element"))
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// The index of the `>` closing a start tag, skipping `>` inside quoted
/// attribute values.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

fn local_name(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn decode_entities(s: &str) -> Result<String, XmlError> {
    if !s.contains('&') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(';')
            .filter(|&e| e <= 10)
            .ok_or_else(|| XmlError("bad entity reference".into()))?;
        let entity = &after[..end];
        let ch = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| XmlError(format!("unknown entity &{entity};")))?
            }
        };
        out.push(ch);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Escapes text for element content we write (part ETags, keys).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_s3_document_with_declaration_namespace_and_entities() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>uploads</Bucket><Key>u1/a &amp; b&#x2F;c&#233;.txt</Key>
  <UploadId>VXBsb2FkIElE</UploadId><Empty/>
</InitiateMultipartUploadResult>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "InitiateMultipartUploadResult");
        assert_eq!(root.child_text("Bucket"), Some("uploads"));
        assert_eq!(root.child_text("Key"), Some("u1/a & b/cé.txt"));
        assert_eq!(root.child_text("UploadId"), Some("VXBsb2FkIElE"));
        assert_eq!(root.child_text("Empty"), Some(""));
    }

    #[test]
    fn prefixed_names_lose_their_prefix_and_quoted_gt_does_not_end_a_tag() {
        let root = parse(r#"<s3:Error a="x>y"><s3:Code>NoSuchKey</s3:Code></s3:Error>"#).unwrap();
        assert_eq!(root.name, "Error");
        assert_eq!(root.child_text("Code"), Some("NoSuchKey"));
    }

    #[test]
    fn repeated_children_come_back_in_order() {
        let root = parse("<R><P><N>1</N></P><P><N>2</N></P><Other/></R>").unwrap();
        let ns: Vec<_> = root.children_named("P").filter_map(|p| p.child_text("N")).collect();
        assert_eq!(ns, ["1", "2"]);
    }

    #[test]
    fn malformed_documents_are_errors_not_panics() {
        for bad in [
            "",
            "plain text",
            "<a>",
            "<a></b>",
            "</a>",
            "<a><b></a>",
            "<a>&bogus;</a>",
            "<a>&#xD800;</a>",
            "<a></a><b></b>",
            "<a",
            "<>",
            "<a><!-- x</a>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn escape_round_trips_through_parse() {
        let s = r#"<"a" & 'b'>"#;
        let root = parse(&format!("<x>{}</x>", escape(s))).unwrap();
        assert_eq!(root.text, s);
    }
}

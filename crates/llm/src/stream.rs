//! Streamed answers: the `text/event-stream` decoder every provider's stream
//! is read with, and [`Delta`], what a provider's stream decoder turns each
//! event into (text, usage, finish, or a failure inside a 200 stream).
//!
//! The decoder follows the WHATWG event-stream rules: lines end in LF, CRLF
//! or CR; `data:` lines of one event are joined with LF; a blank line
//! dispatches; `:` starts a comment; one optional space after the colon is
//! dropped. Bytes are buffered until a whole line is there, so a UTF-8
//! character or a JSON object split across network chunks decodes intact.

use crate::chat::{FinishReason, ProviderError};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `event:` (None means the default, `message`).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental event-stream decoder.
#[derive(Debug, Default)]
pub struct SseDecoder {
    pending: Vec<u8>,
    /// A CR ended the last line; a LF right after it belongs to that line end.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
}

/// Upper bound of one buffered line: a provider sending an endless line
/// must not exhaust the isolate's memory.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// The stream is not an event stream we can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineTooLong;

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> SseDecoder {
        SseDecoder::default()
    }

    /// Feeds bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.pending);
                    self.line(&String::from_utf8_lossy(&line), &mut out);
                }
                _ => {
                    if self.pending.len() >= MAX_LINE_BYTES {
                        return Err(LineTooLong);
                    }
                    self.pending.push(b);
                }
            }
        }
        Ok(out)
    }

    /// The body ended: an event without its closing blank line is dropped,
    /// as the standard says (it may be cut in the middle).
    pub fn finish(&mut self) {
        self.pending.clear();
        self.event = None;
        self.data = None;
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: self.event.take(),
                    data,
                });
            }
            self.event = None;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "event" => self.event = Some(value.to_string()),
            _ => {}
        }
    }
}

/// What one provider event means, provider-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// More answer text.
    Text(String),
    /// Token counts so far (providers send them cumulatively; the last wins).
    /// `None` for a side the provider has not reported yet.
    Usage {
        prompt_tokens: Option<u32>,
        completion_tokens: Option<u32>,
    },
    /// The model that answers, as the provider names it.
    Model(String),
    /// Why the model stopped.
    Finish(FinishReason),
    /// The stream is complete (the provider's end marker).
    Done,
    /// A failure reported inside the stream.
    Error(ProviderError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        chunks.iter().flat_map(|c| d.push(c).unwrap()).collect()
    }

    #[test]
    fn events_split_anywhere_across_chunks_decode_the_same() {
        let whole = "event: delta\ndata: {\"t\":\"h\u{e9}llo\"}\n\n: ping\n\ndata: a\ndata: b\n\n".as_bytes();
        let expected = all(&[whole]);
        assert_eq!(expected.len(), 2);
        for cut in 1..whole.len() {
            assert_eq!(all(&[&whole[..cut], &whole[cut..]]), expected, "cut at {cut}");
        }
        assert_eq!(expected[0].event.as_deref(), Some("delta"));
        assert_eq!(expected[0].data, "{\"t\":\"h\u{e9}llo\"}");
        assert_eq!(expected[1].data, "a\nb");
    }

    #[test]
    fn crlf_and_cr_line_ends_are_line_ends() {
        let got = all(&[b"data: x\r\n\r\ndata: y\r\rdata:z\n\n"]);
        let data: Vec<&str> = got.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["x", "y", "z"]);
    }

    #[test]
    fn a_cut_off_last_event_is_not_dispatched() {
        let mut d = SseDecoder::new();
        assert!(d.push(b"data: partial").unwrap().is_empty());
        d.finish();
        assert!(d.push(b"\n\n").unwrap().is_empty());
    }

    #[test]
    fn an_endless_line_is_refused_instead_of_buffered() {
        let mut d = SseDecoder::new();
        let chunk = vec![b'a'; 1024 * 1024];
        let mut refused = false;
        for _ in 0..5 {
            if d.push(&chunk).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }
}

//! Server-Sent Events: the `text/event-stream` framing, event ids (a
//! reconnecting client sends the last one back as `Last-Event-ID`), and
//! keep-alive comments so proxies do not cut an idle stream.

use futures_util::stream::{self, Stream, StreamExt};

use crate::ctx::Ctx;
use crate::reply::Reply;

/// The comment line sent while no event is ready.
pub const KEEP_ALIVE: &str = ": keep-alive\n\n";

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    id: Option<String>,
    name: Option<String>,
    data: String,
}

/// Ids and names are one line each: a newline would start a new field.
fn one_line(s: &str) -> String {
    s.chars().filter(|c| *c != '\n' && *c != '\r').collect()
}

impl Event {
    /// An event carrying `data` (may span lines).
    pub fn data(data: impl Into<String>) -> Event {
        Event {
            data: data.into(),
            ..Event::default()
        }
    }

    /// An event carrying `value` as JSON.
    pub fn json<T: serde::Serialize>(value: &T) -> Event {
        Event::data(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
    }

    /// Sets the event id.
    pub fn id(mut self, id: impl AsRef<str>) -> Event {
        self.id = Some(one_line(id.as_ref()));
        self
    }

    /// Sets the event name (`event:`).
    pub fn name(mut self, name: impl AsRef<str>) -> Event {
        self.name = Some(one_line(name.as_ref()));
        self
    }

    /// The wire form, ending with the blank line that dispatches it.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(id) = &self.id {
            out.push_str("id: ");
            out.push_str(id);
            out.push('\n');
        }
        if let Some(name) = &self.name {
            out.push_str("event: ");
            out.push_str(name);
            out.push('\n');
        }
        for line in self.data.split('\n') {
            out.push_str("data: ");
            out.push_str(line.strip_suffix('\r').unwrap_or(line));
            out.push('\n');
        }
        out.push('\n');
        out
    }
}

enum Chunk {
    Event(Event),
    KeepAlive,
    End,
}

/// A 200 `text/event-stream` reply of `events`, with a keep-alive comment
/// after each `keep_alive_ms` without one (0: none).
pub fn sse(ctx: &Ctx, events: impl Stream<Item = Event> + 'static, keep_alive_ms: u32) -> Reply {
    let events = events.map(Chunk::Event).chain(stream::once(async { Chunk::End }));
    let body = if keep_alive_ms == 0 {
        events.boxed_local()
    } else {
        let host = ctx.host();
        let ticks = stream::unfold(host, move |host| async move {
            host.sleep(keep_alive_ms).await;
            Some((Chunk::KeepAlive, host))
        });
        stream::select(events, ticks).boxed_local()
    };
    let bytes = body
        .take_while(|c| std::future::ready(!matches!(c, Chunk::End)))
        .map(|c| match c {
            Chunk::Event(e) => e.encode().into_bytes(),
            _ => KEEP_ALIVE.as_bytes().to_vec(),
        });
    let mut reply = Reply::stream(200, "text/event-stream; charset=utf-8", Box::pin(bytes));
    // Proxies that buffer (nginx) would hold events back without this.
    reply.headers.set("x-accel-buffering", "no");
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_framed_with_id_name_and_one_data_line_per_line() {
        let e = Event::data("a\nb").id("7").name("delta");
        assert_eq!(e.encode(), "id: 7\nevent: delta\ndata: a\ndata: b\n\n");
    }

    #[test]
    fn a_newline_cannot_forge_a_field_through_an_id() {
        let e = Event::data("x").id("1\nevent: admin");
        assert_eq!(e.encode(), "id: 1event: admin\ndata: x\n\n");
    }
}

//! A WebSocket as Rust sees it: typed messages in and out and the close.
//! The host feeds incoming frames through a [`SocketFeed`]; outgoing ones go
//! to a callback the host supplies. Nothing here touches JavaScript, so a
//! session runs natively in tests with a vector as the far end.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::host::LocalFuture;

/// One WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

/// A close frame: RFC 6455 code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// 1000 normal, 1008 policy violation, 1011 server error, ...
    pub code: u16,
    /// Human-readable, at most 123 bytes on the wire.
    pub reason: String,
}

/// What the session sends to the far end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A message.
    Message(Message),
    /// Close the connection.
    Close(CloseFrame),
}

/// Runs a WebSocket session to its end.
pub type SocketSession = Box<dyn FnOnce(WebSocket) -> LocalFuture<'static, ()>>;

#[derive(Default)]
struct Inbox {
    queue: VecDeque<Message>,
    closed: Option<CloseFrame>,
    waker: Option<Waker>,
}

/// The session's end of the socket.
pub struct WebSocket {
    inbox: Rc<RefCell<Inbox>>,
    out: Rc<dyn Fn(Outgoing)>,
}

/// The host's end: it pushes what arrives.
#[derive(Clone)]
pub struct SocketFeed {
    inbox: Rc<RefCell<Inbox>>,
}

impl SocketFeed {
    /// A message arrived.
    pub fn push(&self, m: Message) {
        let mut inbox = self.inbox.borrow_mut();
        inbox.queue.push_back(m);
        if let Some(w) = inbox.waker.take() {
            w.wake();
        }
    }

    /// The far end closed (or the connection dropped).
    pub fn closed(&self, frame: CloseFrame) {
        let mut inbox = self.inbox.borrow_mut();
        inbox.closed.get_or_insert(frame);
        if let Some(w) = inbox.waker.take() {
            w.wake();
        }
    }
}

impl WebSocket {
    /// A socket whose outgoing frames go to `out`, and the feed for incoming ones.
    pub fn pair(out: Rc<dyn Fn(Outgoing)>) -> (WebSocket, SocketFeed) {
        let inbox = Rc::new(RefCell::new(Inbox::default()));
        (
            WebSocket {
                inbox: inbox.clone(),
                out,
            },
            SocketFeed { inbox },
        )
    }

    /// The next message; `None` once the connection is closed and drained.
    pub async fn recv(&self) -> Option<Message> {
        poll_fn(|cx| {
            let mut inbox = self.inbox.borrow_mut();
            if let Some(m) = inbox.queue.pop_front() {
                return Poll::Ready(Some(m));
            }
            if inbox.closed.is_some() {
                return Poll::Ready(None);
            }
            inbox.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// How the far end closed, once it has.
    pub fn close_frame(&self) -> Option<CloseFrame> {
        self.inbox.borrow().closed.clone()
    }

    /// Sends a message.
    pub fn send(&self, m: Message) {
        (self.out)(Outgoing::Message(m));
    }

    /// Sends a text message.
    pub fn send_text(&self, text: impl Into<String>) {
        self.send(Message::Text(text.into()));
    }

    /// Closes the connection.
    pub fn close(&self, code: u16, reason: &str) {
        (self.out)(Outgoing::Close(CloseFrame {
            code,
            reason: reason.to_string(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_in_order_and_recv_ends_at_close() {
        let sent = Rc::new(RefCell::new(Vec::new()));
        let sink = sent.clone();
        let (ws, feed) = WebSocket::pair(Rc::new(move |o| sink.borrow_mut().push(o)));
        feed.push(Message::Text("a".into()));
        feed.push(Message::Binary(vec![1]));
        feed.closed(CloseFrame {
            code: 1000,
            reason: String::new(),
        });
        let got = pollster::block_on(async {
            let mut got = Vec::new();
            while let Some(m) = ws.recv().await {
                ws.send(m.clone());
                got.push(m);
            }
            got
        });
        assert_eq!(got, vec![Message::Text("a".into()), Message::Binary(vec![1])]);
        assert_eq!(sent.borrow().len(), 2);
        assert_eq!(ws.close_frame().map(|f| f.code), Some(1000));
    }
}

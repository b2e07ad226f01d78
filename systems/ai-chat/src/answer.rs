//! Getting one answer from the candidates, buffered ([`answer_buffered`])
//! or streamed ([`Producer::run`]), with the rules that make fallbacks,
//! stop and resume work together:
//!
//! - A candidate that fails retryably before the answer's first token
//!   hands over to the next (a `fallback` event says so); after the first
//!   token nothing is retried: an `error` event ends the stream and the
//!   partial answer is kept. Two providers' answers are never spliced.
//! - Every event gets a sequence number (its SSE id) and is saved with the
//!   answer so far at least every `flush_ms`; each save also reads the stop
//!   flag, so a stop sent to any isolate ends the stream within about one
//!   flush: the upstream body is dropped (which aborts the fetch) and the
//!   partial answer is settled as `stopped`.
//! - Settlement uses the provider's usage when it sent both counts, else the
//!   reservation (SQL decides); the last event (`done`, `stopped` or
//!   `error`) carries what was charged.
//!
//! The producer runs on the host's background task, not on the client's
//! response: a client that disconnects stops reading, not the answer, and
//! reconnects with `Last-Event-ID` to read the rest from the log.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use edgeworks_core::http_client::TransportError;
use edgeworks_core::Response;
use edgeworks_llm::call::{build_request, parse_completion, parse_error, transport_error, CallSpec, StreamDecoder};
use edgeworks_llm::chat::{FinishReason, ProviderError};
use edgeworks_llm::prompt::Conversation;
use edgeworks_llm::stream::Delta;
use edgeworks_runtime::{Event, Host};
use futures_util::future::{select, Either};
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};

use crate::ledger::{FinishCall, Ledger, LoggedEvent, Settlement, Status};
use crate::request::Candidate;

/// A candidate with everything needed to call it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Provider and (priced) model.
    pub candidate: Candidate,
    /// The call.
    pub spec: CallSpec,
}

/// The SSE event names a terminal event may have.
pub const TERMINAL_EVENTS: [&str; 3] = ["done", "stopped", "error"];

/// Largest error body read from a provider.
const MAX_ERROR_BODY: usize = 64 * 1024;

fn error_json(e: &ProviderError) -> Value {
    json!({ "code": e.code(), "message": e.to_string(), "provider": e.provider, "retryable": e.is_retryable() })
}

fn candidate_json(c: &Candidate) -> Value {
    json!({ "provider": c.provider.as_str(), "model": c.model })
}

/// A buffered answer.
#[derive(Debug, Clone)]
pub struct BufferedAnswer {
    /// What settlement needs.
    pub finish: FinishCall,
    /// The answer's finish reason, when it completed.
    pub finish_reason: Option<FinishReason>,
    /// The last failure, when none answered.
    pub error: Option<ProviderError>,
    /// Failures that led to fallbacks, in order.
    pub fallbacks: Vec<Value>,
}

/// Tries the candidates in order until one answers.
pub async fn answer_buffered(host: &dyn Host, attempts: &[Attempt], conversation: &Conversation) -> BufferedAnswer {
    let mut fallbacks = Vec::new();
    let mut last_error = None;
    for (i, a) in attempts.iter().enumerate() {
        let req = build_request(&a.spec, conversation, false);
        let outcome = match host.send(req, a.spec.timeout_ms).await {
            Ok(resp) => parse_completion(&a.spec, conversation, &resp),
            Err(e) => Err(transport_error(&a.spec, e)),
        };
        match outcome {
            Ok(c) => {
                return BufferedAnswer {
                    finish: FinishCall {
                        status: Some(Status::Completed),
                        content: c.text,
                        provider: Some(a.candidate.provider.as_str().to_string()),
                        model: Some(a.candidate.model.clone()),
                        usage: (!c.usage.estimated).then_some((c.usage.prompt_tokens, c.usage.completion_tokens)),
                        error: None,
                    },
                    finish_reason: Some(c.finish_reason),
                    error: None,
                    fallbacks,
                }
            }
            Err(e) => {
                let more = i + 1 < attempts.len();
                if e.is_retryable() && more {
                    fallbacks.push(json!({ "from": candidate_json(&a.candidate), "error": error_json(&e) }));
                    last_error = Some(e);
                    continue;
                }
                return BufferedAnswer {
                    finish: FinishCall {
                        status: Some(Status::Failed),
                        content: String::new(),
                        provider: Some(a.candidate.provider.as_str().to_string()),
                        model: Some(a.candidate.model.clone()),
                        usage: None,
                        error: Some(error_json(&e)),
                    },
                    finish_reason: None,
                    error: Some(e),
                    fallbacks,
                };
            }
        }
    }
    BufferedAnswer {
        finish: FinishCall {
            status: Some(Status::Failed),
            content: String::new(),
            provider: None,
            model: None,
            usage: None,
            error: last_error.as_ref().map(error_json),
        },
        finish_reason: None,
        error: last_error,
        fallbacks,
    }
}

#[derive(Default)]
struct LiveInner {
    queue: VecDeque<Event>,
    closed: bool,
    reader_gone: bool,
    waker: Option<Waker>,
}

/// The channel from the producer to the client connected now, if any.
#[derive(Default, Clone)]
pub struct Live(Rc<RefCell<LiveInner>>);

impl Live {
    /// A new channel.
    pub fn new() -> Live {
        Live::default()
    }

    fn push(&self, e: Event) {
        let mut inner = self.0.borrow_mut();
        if inner.reader_gone {
            return;
        }
        inner.queue.push_back(e);
        if let Some(w) = inner.waker.take() {
            w.wake();
        }
    }

    fn close(&self) {
        let mut inner = self.0.borrow_mut();
        inner.closed = true;
        if let Some(w) = inner.waker.take() {
            w.wake();
        }
    }

    /// The client's side: events until the producer closes. Dropping it
    /// (the client went away) only stops delivery; the producer goes on.
    pub fn reader(&self) -> impl Stream<Item = Event> {
        struct Reader(Live);
        impl Drop for Reader {
            fn drop(&mut self) {
                let mut inner = self.0 .0.borrow_mut();
                inner.reader_gone = true;
                inner.queue.clear();
            }
        }
        let reader = Reader(self.clone());
        futures_util::stream::unfold(reader, |reader| async move {
            let next = poll_fn(|cx| {
                let mut inner = reader.0 .0.borrow_mut();
                if let Some(e) = inner.queue.pop_front() {
                    return Poll::Ready(Some(e));
                }
                if inner.closed {
                    return Poll::Ready(None);
                }
                inner.waker = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            next.map(|e| (e, reader))
        })
    }
}

/// Converts a saved event to its SSE form.
pub fn to_sse(e: &LoggedEvent) -> Event {
    Event::data(e.data.clone()).id(e.seq.to_string()).name(&e.event)
}

/// What ended the wait for an upstream step.
enum Waited<T> {
    Ready(T),
    Stop,
    Idle,
}

/// The stream producer of one answer.
pub struct Producer {
    host: Rc<dyn Host>,
    ledger: Rc<dyn Ledger>,
    live: Live,
    flush_ms: u32,
    idle_ms: u32,
    seq: u32,
    pending: Vec<LoggedEvent>,
    content: String,
    saved_len: usize,
    last_save_ms: i64,
}

/// How the upstream part ended.
enum Outcome {
    Completed {
        attempt: usize,
        finish: FinishReason,
        usage: Option<(u32, u32)>,
    },
    Stopped {
        attempt: Option<usize>,
        usage: Option<(u32, u32)>,
    },
    Failed {
        attempt: Option<usize>,
        error: ProviderError,
    },
}

impl Producer {
    /// A producer saving through `ledger` and delivering to `live`.
    pub fn new(host: Rc<dyn Host>, ledger: Rc<dyn Ledger>, live: Live, flush_ms: u32, idle_ms: u32) -> Producer {
        let now = host.now_ms();
        Producer {
            host,
            ledger,
            live,
            flush_ms: flush_ms.max(1),
            idle_ms,
            seq: 0,
            pending: Vec::new(),
            content: String::new(),
            saved_len: 0,
            last_save_ms: now,
        }
    }

    fn emit(&mut self, event: &str, data: Value) {
        self.seq += 1;
        let logged = LoggedEvent {
            seq: self.seq,
            event: event.to_string(),
            data: data.to_string(),
        };
        self.live.push(to_sse(&logged));
        self.pending.push(logged);
    }

    /// Saves what is pending; true when the owner asked to stop. A failed
    /// save keeps the events for the next one (the log stays gap-free).
    async fn save(&mut self) -> bool {
        self.last_save_ms = self.host.now_ms();
        let content = (self.content.len() != self.saved_len).then(|| self.content.clone());
        match self.ledger.save(&self.pending, content.as_deref()).await {
            Ok(stop) => {
                self.pending.clear();
                self.saved_len = self.content.len();
                stop
            }
            Err(_) => false,
        }
    }

    fn save_due(&self) -> bool {
        self.host.now_ms() - self.last_save_ms >= i64::from(self.flush_ms) || self.pending.len() >= 64
    }

    /// Awaits `fut`, saving every `flush_ms` meanwhile; gives up on a stop
    /// request or after `idle_ms` of waiting.
    async fn wait<T>(&mut self, fut: &mut (impl std::future::Future<Output = T> + Unpin)) -> Waited<T> {
        let started = self.host.now_ms();
        loop {
            let tick = self.host.sleep(self.flush_ms);
            match select(&mut *fut, tick).await {
                Either::Left((v, _)) => return Waited::Ready(v),
                Either::Right(((), _)) => {
                    if self.save().await {
                        return Waited::Stop;
                    }
                    if self.host.now_ms() - started >= i64::from(self.idle_ms) {
                        return Waited::Idle;
                    }
                }
            }
        }
    }

    /// Runs the answer to its end: events to the live client and the log,
    /// then settlement. `start` is the first event's data.
    pub async fn run(mut self, attempts: Vec<Attempt>, conversation: Conversation, start: Value) -> Settlement {
        self.emit("start", start);
        let outcome = self.upstream(&attempts, &conversation).await;
        let (status, attempt, usage, error, finish) = match &outcome {
            Outcome::Completed { attempt, finish, usage } => {
                (Status::Completed, Some(*attempt), *usage, None, Some(finish.clone()))
            }
            Outcome::Stopped { attempt, usage } => (Status::Stopped, *attempt, *usage, None, None),
            Outcome::Failed { attempt, error } => (Status::Failed, *attempt, None, Some(error.clone()), None),
        };
        let answered = attempt.and_then(|i| attempts.get(i));
        // Everything before the last event is in the log before settlement.
        if !self.pending.is_empty() || self.content.len() != self.saved_len {
            self.save().await;
        }
        let call = FinishCall {
            status: Some(status.clone()),
            content: self.content.clone(),
            provider: answered.map(|a| a.candidate.provider.as_str().to_string()),
            model: answered.map(|a| a.candidate.model.clone()),
            usage,
            error: error.as_ref().map(error_json),
        };
        let settlement = match self.ledger.finish(&call).await {
            Ok(s) => s,
            Err(e) => Settlement {
                cost_usd: String::new(),
                usage_source: format!("unsettled: {}", e.code()),
            },
        };
        let usage_json = usage.map(|(p, c)| json!({ "prompt_tokens": p, "completion_tokens": c }));
        let charged = json!({ "cost_usd": settlement.cost_usd, "usage_source": settlement.usage_source,
                              "usage": usage_json });
        let (name, mut data) = match status {
            Status::Completed => (
                "done",
                json!({ "finish_reason": finish.as_ref().map(FinishReason::as_str),
                        "provider": call.provider, "model": call.model }),
            ),
            Status::Stopped => ("stopped", json!({ "partial": true })),
            Status::Failed => {
                let mut d = error.as_ref().map(error_json).unwrap_or_else(|| json!({}));
                d["partial"] = json!(!self.content.is_empty());
                ("error", d)
            }
        };
        if let (Some(d), Some(c)) = (data.as_object_mut(), charged.as_object()) {
            d.extend(c.clone());
        }
        self.emit(name, data);
        self.save().await;
        self.live.close();
        settlement
    }

    async fn upstream(&mut self, attempts: &[Attempt], conversation: &Conversation) -> Outcome {
        let mut last_error = None;
        for (i, a) in attempts.iter().enumerate() {
            let more = i + 1 < attempts.len();
            match self.attempt(i, a, conversation).await {
                Ok(outcome) => return outcome,
                Err(e) => {
                    if e.is_retryable() && more {
                        let next = &attempts[i + 1].candidate;
                        self.emit(
                            "fallback",
                            json!({ "from": candidate_json(&a.candidate), "to": candidate_json(next),
                                    "error": error_json(&e) }),
                        );
                        last_error = Some(e);
                        continue;
                    }
                    return Outcome::Failed {
                        attempt: Some(i),
                        error: e,
                    };
                }
            }
        }
        Outcome::Failed {
            attempt: None,
            error: last_error.unwrap_or_else(|| {
                ProviderError::new(
                    "none",
                    edgeworks_llm::chat::ProviderErrorKind::BadRequest {
                        status: 400,
                        message: "no provider to try".into(),
                    },
                )
            }),
        }
    }

    /// One candidate. `Err` only before its first token (the caller may
    /// fall back); after it every end is an `Outcome`.
    async fn attempt(
        &mut self,
        index: usize,
        a: &Attempt,
        conversation: &Conversation,
    ) -> Result<Outcome, ProviderError> {
        let req = build_request(&a.spec, conversation, true);
        let mut open = self.host.send_streaming(req, a.spec.timeout_ms);
        let resp = match self.wait(&mut open).await {
            Waited::Ready(Ok(r)) => r,
            Waited::Ready(Err(e)) => return Err(transport_error(&a.spec, e)),
            Waited::Stop => {
                return Ok(Outcome::Stopped {
                    attempt: None,
                    usage: None,
                })
            }
            Waited::Idle => {
                return Err(transport_error(
                    &a.spec,
                    TransportError::Timeout { after_ms: self.idle_ms },
                ))
            }
        };
        drop(open);
        let mut body = resp.body;
        if !(200..300).contains(&resp.status) {
            let mut bytes = Vec::new();
            while bytes.len() < MAX_ERROR_BODY {
                match self.wait(&mut body.next()).await {
                    Waited::Ready(Some(Ok(chunk))) => bytes.extend_from_slice(&chunk),
                    Waited::Stop => {
                        return Ok(Outcome::Stopped {
                            attempt: None,
                            usage: None,
                        })
                    }
                    _ => break,
                }
            }
            let r = Response {
                status: resp.status,
                headers: resp.headers,
                body: bytes,
            };
            return Err(parse_error(&a.spec, &r));
        }
        let mut decoder = StreamDecoder::new(&a.spec);
        let mut committed = false;
        let mut prompt = None;
        let mut completion = None;
        let mut finish = None;
        let usage = |p: Option<u32>, c: Option<u32>| p.zip(c);
        loop {
            let step = self.wait(&mut body.next()).await;
            let deltas = match step {
                Waited::Ready(Some(Ok(chunk))) => decoder.push(&chunk),
                Waited::Ready(None) => decoder.finish(finish.is_some()),
                Waited::Ready(Some(Err(e))) => vec![Delta::Error(transport_error(&a.spec, e))],
                Waited::Stop => {
                    // Dropping `body` (on return) aborts the upstream fetch.
                    return Ok(Outcome::Stopped {
                        attempt: committed.then_some(index),
                        usage: usage(prompt, completion),
                    });
                }
                Waited::Idle => vec![Delta::Error(transport_error(
                    &a.spec,
                    TransportError::Timeout { after_ms: self.idle_ms },
                ))],
            };
            for d in deltas {
                match d {
                    Delta::Text(t) => {
                        committed = true;
                        self.content.push_str(&t);
                        self.emit("delta", json!({ "text": t }));
                    }
                    Delta::Usage {
                        prompt_tokens,
                        completion_tokens,
                    } => {
                        prompt = prompt_tokens.or(prompt);
                        completion = completion_tokens.or(completion);
                    }
                    Delta::Model(_) => {}
                    Delta::Finish(f) => finish = Some(f),
                    Delta::Done => {
                        if !committed {
                            return Err(ProviderError::new(
                                a.candidate.provider.as_str(),
                                edgeworks_llm::chat::ProviderErrorKind::EmptyResponse {
                                    finish_reason: finish.as_ref().map(|f| f.as_str().to_string()),
                                },
                            ));
                        }
                        return Ok(Outcome::Completed {
                            attempt: index,
                            finish: finish.unwrap_or(FinishReason::Stop),
                            usage: usage(prompt, completion),
                        });
                    }
                    Delta::Error(e) => {
                        if committed {
                            return Ok(Outcome::Failed {
                                attempt: Some(index),
                                error: e,
                            });
                        }
                        return Err(e);
                    }
                }
            }
            if self.save_due() && self.save().await {
                return Ok(Outcome::Stopped {
                    attempt: committed.then_some(index),
                    usage: usage(prompt, completion),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Settlement;
    use edgeworks_core::http::Headers;
    use edgeworks_core::{Request, Response};
    use edgeworks_llm::call::Provider;
    use edgeworks_runtime::{Level, LocalFuture, StreamedResponse};
    use std::cell::Cell;

    /// A scripted upstream per URL path, a manual clock, recorded saves.
    struct TestHost {
        now: Cell<i64>,
        scripts: RefCell<VecDeque<Script>>,
        opened: RefCell<Vec<String>>,
    }

    enum Script {
        /// Status, then chunks; `hang` leaves the body open after them.
        Reply {
            status: u16,
            chunks: Vec<String>,
            hang: bool,
        },
        Refused,
    }

    impl Host for TestHost {
        fn now_ms(&self) -> i64 {
            self.now.get()
        }
        fn fill_random(&self, buf: &mut [u8]) {
            buf.fill(4)
        }
        fn write_log(&self, _: Level, _: &str) {}
        fn send(&self, _: Request, _: u32) -> LocalFuture<'static, Result<Response, TransportError>> {
            Box::pin(async { Err(TransportError::Network("unused".into())) })
        }
        fn sleep(&self, ms: u32) -> LocalFuture<'static, ()> {
            // Time passes only when the producer waits.
            self.now.set(self.now.get() + i64::from(ms));
            Box::pin(async {})
        }
        fn send_streaming(
            &self,
            req: Request,
            _: u32,
        ) -> LocalFuture<'static, Result<StreamedResponse, TransportError>> {
            self.opened.borrow_mut().push(req.url.clone());
            let script = self.scripts.borrow_mut().pop_front();
            Box::pin(async move {
                match script {
                    Some(Script::Reply { status, chunks, hang }) => {
                        let items = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(c.into_bytes())));
                        let body: std::pin::Pin<Box<dyn Stream<Item = Result<Vec<u8>, TransportError>>>> = if hang {
                            Box::pin(items.chain(futures_util::stream::pending()))
                        } else {
                            Box::pin(items)
                        };
                        Ok(StreamedResponse {
                            status,
                            headers: Headers::new(),
                            body,
                        })
                    }
                    _ => Err(TransportError::Network("connection refused".into())),
                }
            })
        }
    }

    #[derive(Default)]
    struct TestLedger {
        saved: RefCell<Vec<LoggedEvent>>,
        content: RefCell<String>,
        stop_after_saves: Cell<Option<u32>>,
        saves: Cell<u32>,
        finished: RefCell<Option<FinishCall>>,
    }

    impl Ledger for TestLedger {
        fn save<'a>(
            &'a self,
            events: &'a [LoggedEvent],
            content: Option<&'a str>,
        ) -> LocalFuture<'a, Result<bool, edgeworks_core::ApiError>> {
            self.saved.borrow_mut().extend_from_slice(events);
            if let Some(c) = content {
                *self.content.borrow_mut() = c.to_string();
            }
            self.saves.set(self.saves.get() + 1);
            let stop = self.stop_after_saves.get().is_some_and(|n| self.saves.get() > n);
            Box::pin(async move { Ok(stop) })
        }
        fn finish<'a>(&'a self, call: &'a FinishCall) -> LocalFuture<'a, Result<Settlement, edgeworks_core::ApiError>> {
            *self.finished.borrow_mut() = Some(call.clone());
            let source = if call.usage.is_some() {
                "provider"
            } else {
                "reservation"
            };
            Box::pin(async move {
                Ok(Settlement {
                    cost_usd: "0.1".into(),
                    usage_source: source.into(),
                })
            })
        }
    }

    fn attempt(provider: Provider, model: &str) -> Attempt {
        Attempt {
            candidate: Candidate {
                provider,
                model: model.into(),
            },
            spec: CallSpec {
                provider,
                model: model.into(),
                api_key: "sk-test-key-0000".into(),
                base_url: format!("http://127.0.0.1:9/{}", provider.as_str()),
                temperature: None,
                max_tokens: 50,
                timeout_ms: 1000,
            },
        }
    }

    fn openai_chunk(text: &str) -> String {
        format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n"
        )
    }

    fn run(scripts: Vec<Script>, attempts: Vec<Attempt>, ledger: Rc<TestLedger>) -> (Vec<Event>, Rc<TestHost>) {
        let host = Rc::new(TestHost {
            now: Cell::new(0),
            scripts: RefCell::new(scripts.into()),
            opened: RefCell::new(Vec::new()),
        });
        let live = Live::new();
        let reader = live.reader();
        let producer = Producer::new(host.clone(), ledger, live, 100, 10_000);
        let conv = Conversation {
            system: String::new(),
            messages: vec![edgeworks_llm::prompt::Message::user("hi")],
            estimated_tokens: 10,
            dropped_messages: 0,
        };
        pollster::block_on(producer.run(attempts, conv, json!({"stream_id": "s"})));
        (pollster::block_on(reader.collect::<Vec<_>>()), host)
    }

    fn names(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                e.encode()
                    .lines()
                    .find_map(|l| l.strip_prefix("event: ").map(str::to_string))
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn a_retryable_failure_before_the_first_token_falls_back_to_the_next_candidate() {
        let ledger = Rc::new(TestLedger::default());
        let done = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        let (events, host) = run(
            vec![
                Script::Reply {
                    status: 429,
                    chunks: vec![r#"{"error":{"message":"slow down"}}"#.into()],
                    hang: false,
                },
                Script::Reply {
                    status: 200,
                    chunks: vec![openai_chunk("Hel"), openai_chunk("lo"), done.into()],
                    hang: false,
                },
            ],
            vec![
                attempt(Provider::Mistral, "mistral-small-latest"),
                attempt(Provider::OpenAi, "gpt-4o-mini"),
            ],
            ledger.clone(),
        );
        assert_eq!(names(&events), ["start", "fallback", "delta", "delta", "done"]);
        assert_eq!(host.opened.borrow().len(), 2);
        let fin = ledger.finished.borrow().clone().unwrap();
        assert_eq!((fin.content.as_str(), fin.usage), ("Hello", Some((3, 2))));
        assert_eq!(fin.provider.as_deref(), Some("openai"));
        // Every event the client saw is in the log, in order, ids 1..=5.
        let seqs: Vec<u32> = ledger.saved.borrow().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_failure_after_the_first_token_is_an_error_event_never_a_second_answer() {
        let ledger = Rc::new(TestLedger::default());
        let (events, host) = run(
            vec![Script::Reply {
                status: 200,
                chunks: vec![
                    openai_chunk("Part"),
                    "data: {\"error\":{\"message\":\"boom\"}}\n\n".into(),
                ],
                hang: false,
            }],
            vec![
                attempt(Provider::OpenAi, "gpt-4o-mini"),
                attempt(Provider::Mistral, "mistral-small-latest"),
            ],
            ledger.clone(),
        );
        assert_eq!(names(&events), ["start", "delta", "error"]);
        assert_eq!(host.opened.borrow().len(), 1);
        let fin = ledger.finished.borrow().clone().unwrap();
        assert_eq!(
            (fin.status, fin.content.as_str(), fin.usage),
            (Some(Status::Failed), "Part", None)
        );
        assert!(events.last().unwrap().encode().contains("\"partial\":true"));
    }

    #[test]
    fn a_stop_request_ends_a_hanging_stream_and_keeps_the_partial_answer() {
        let ledger = Rc::new(TestLedger::default());
        ledger.stop_after_saves.set(Some(1));
        let (events, _) = run(
            vec![Script::Reply {
                status: 200,
                chunks: vec![openai_chunk("Half")],
                hang: true,
            }],
            vec![attempt(Provider::OpenAi, "gpt-4o-mini")],
            ledger.clone(),
        );
        assert_eq!(names(&events), ["start", "delta", "stopped"]);
        let fin = ledger.finished.borrow().clone().unwrap();
        assert_eq!((fin.status, fin.content.as_str()), (Some(Status::Stopped), "Half"));
        // No usage arrived: settlement charges the reservation.
        assert!(events.last().unwrap().encode().contains("reservation"));
    }

    #[test]
    fn a_stream_without_usage_settles_without_usage() {
        let ledger = Rc::new(TestLedger::default());
        let (_, _) = run(
            vec![Script::Reply {
                status: 200,
                chunks: vec![openai_chunk("x"), "data: [DONE]\n\n".into()],
                hang: false,
            }],
            vec![attempt(Provider::OpenAi, "gpt-4o-mini")],
            ledger.clone(),
        );
        let fin = ledger.finished.borrow().clone().unwrap();
        assert_eq!((fin.status, fin.usage), (Some(Status::Completed), None));
    }

    #[test]
    fn an_unreachable_last_candidate_fails_with_nothing_generated() {
        let ledger = Rc::new(TestLedger::default());
        let (events, _) = run(
            vec![Script::Refused],
            vec![attempt(Provider::Anthropic, "claude-3-5-haiku-latest")],
            ledger.clone(),
        );
        assert_eq!(names(&events), ["start", "error"]);
        let fin = ledger.finished.borrow().clone().unwrap();
        assert_eq!(
            (fin.status, fin.content.as_str(), fin.provider.as_deref()),
            (Some(Status::Failed), "", Some("anthropic"))
        );
    }
}

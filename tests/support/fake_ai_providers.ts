// Stand-ins for the four chat APIs chat-completion speaks to, each on its own
// 127.0.0.1 port and speaking that provider's documented wire format:
//
//   openai     POST /v1/chat/completions   Authorization: Bearer   SSE `data:` chunks, usage chunk
//                                          (only with stream_options.include_usage), `data: [DONE]`
//   mistral    POST /v1/chat/completions   Authorization: Bearer   SSE chunks, usage in the last, [DONE]
//   anthropic  POST /v1/messages           x-api-key + anthropic-version   named events message_start ...
//                                          message_stop; `event: error` mid-stream
//   gemini     POST /v1beta/models/{m}:generateContent | :streamGenerateContent?alt=sse   x-goog-api-key
//
// Errors use each provider's error body and statuses (429 with retry-after, Anthropic's 529,
// Gemini's RetryInfo). What a request gets is chosen by directives in its LAST user message,
// so concurrent tests never share a script:
//
//   [fake status=429 retry_after=2]   answer with that HTTP error
//   [fake chunks=5 delay=20]          five text chunks "w1 ".."w5 ", 20 ms apart (defaults 3 and 5)
//   [fake prompt=40 completion=9]     reported usage (defaults: 17 and the number of chunks)
//   [fake no_usage]                   report no usage at all
//   [fake fail_after=2]               two chunks, then the provider's mid-stream failure
//   [fake hang_after=2]               two chunks, then silence until the client goes away
//   [fake wait=300]                   wait before answering
//   [fake tag=abc]                    a label to find the request by
//   [fake mistral:status=503]         a directive for one provider only (fallback tests)
//
// A key starting with "bad-" is refused with the provider's 401 body. Controls on every server:
//   GET /__requests[?tag=]  the requests received (provider, path, key, body, tag, aborted)
//   POST /__reset           forget them
//
// In-process: `const f = await startFakeProviders()`; standalone (scripts/test):
//   deno run --allow-net tests/support/fake_ai_providers.ts <openai> <anthropic> <mistral> <gemini>

export type ProviderName = "openai" | "anthropic" | "mistral" | "gemini";
export const PROVIDERS: ProviderName[] = ["openai", "anthropic", "mistral", "gemini"];

export interface Recorded {
  provider: ProviderName;
  path: string;
  key: string | null;
  headers: Record<string, string>;
  body: any;
  tag: string | null;
  stream: boolean;
  aborted: boolean;
  finished: boolean;
}

export interface FakeProviders {
  urls: Record<ProviderName, string>;
  requests(tag?: string): Recorded[];
  close(): Promise<void>;
}

interface Directives {
  status?: number;
  retry_after?: number;
  chunks: number;
  delay: number;
  prompt: number;
  completion?: number;
  no_usage: boolean;
  fail_after?: number;
  hang_after?: number;
  wait: number;
  tag: string | null;
}

function directives(text: string, provider: ProviderName): Directives {
  const d: Directives = { chunks: 3, delay: 5, prompt: 17, no_usage: false, wait: 0, tag: null };
  for (const m of text.matchAll(/\[fake ([^\]]*)\]/g)) {
    for (const scoped of m[1].trim().split(/\s+/)) {
      const colon = scoped.indexOf(":");
      if (colon > 0 && PROVIDERS.includes(scoped.slice(0, colon) as ProviderName) && scoped.slice(0, colon) !== provider) continue;
      const part = colon > 0 && PROVIDERS.includes(scoped.slice(0, colon) as ProviderName) ? scoped.slice(colon + 1) : scoped;
      const [k, v] = part.split("=");
      if (k === "no_usage") d.no_usage = true;
      else if (k === "tag") d.tag = v ?? null;
      else if (v !== undefined && /^\d+$/.test(v)) (d as any)[k] = Number(v);
    }
  }
  return d;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const enc = new TextEncoder();

function lastUserText(provider: ProviderName, body: any): string {
  if (provider === "gemini") {
    const users = (body?.contents ?? []).filter((c: any) => c.role === "user");
    const parts = users.at(-1)?.parts ?? [];
    return parts.map((p: any) => p.text ?? "").join("");
  }
  const users = (body?.messages ?? []).filter((m: any) => m.role === "user");
  const c = users.at(-1)?.content;
  return typeof c === "string" ? c : JSON.stringify(c ?? "");
}

function keyOf(provider: ProviderName, h: Headers): string | null {
  if (provider === "anthropic") return h.get("x-api-key");
  if (provider === "gemini") return h.get("x-goog-api-key");
  const a = h.get("authorization");
  return a?.startsWith("Bearer ") ? a.slice(7) : null;
}

function errorBody(provider: ProviderName, status: number, retryAfter?: number): unknown {
  const msg = status === 429
    ? "Rate limit reached, retry later"
    : status === 401
    ? "invalid x-api-key"
    : "The server had an error while processing your request";
  switch (provider) {
    case "openai":
      return {
        error: {
          message: msg,
          type: status === 429 ? "requests" : status === 401 ? "invalid_request_error" : "server_error",
          param: null,
          code: status === 429 ? "rate_limit_exceeded" : status === 401 ? "invalid_api_key" : null,
        },
      };
    case "mistral":
      return status === 401
        ? { message: "Unauthorized", request_id: crypto.randomUUID().replaceAll("-", "") }
        : { object: "error", message: msg, type: status === 429 ? "rate_limited" : "internal_error", param: null, code: String(status) };
    case "anthropic": {
      const type = status === 429
        ? "rate_limit_error"
        : status === 401
        ? "authentication_error"
        : status === 529
        ? "overloaded_error"
        : status >= 500
        ? "api_error"
        : "invalid_request_error";
      return { type: "error", error: { type, message: msg } };
    }
    case "gemini": {
      const names: Record<number, string> = { 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE" };
      const details = status === 429 && retryAfter !== undefined
        ? [{ "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: `${retryAfter}s` }]
        : [];
      return { error: { code: status, message: msg, status: names[status] ?? "UNKNOWN", details } };
    }
  }
}

function buffered(provider: ProviderName, model: string, d: Directives): unknown {
  const text = Array.from({ length: d.chunks }, (_, i) => `w${i + 1} `).join("");
  const completion = d.completion ?? d.chunks;
  switch (provider) {
    case "openai":
    case "mistral":
      return {
        id: "cmpl-fake", object: "chat.completion", created: Math.floor(Date.now() / 1000), model,
        choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }],
        ...(d.no_usage ? {} : { usage: { prompt_tokens: d.prompt, completion_tokens: completion, total_tokens: d.prompt + completion } }),
      };
    case "anthropic":
      return {
        id: "msg_fake", type: "message", role: "assistant", model,
        content: [{ type: "text", text }], stop_reason: "end_turn", stop_sequence: null,
        ...(d.no_usage ? {} : { usage: { input_tokens: d.prompt, output_tokens: completion } }),
      };
    case "gemini":
      return {
        candidates: [{ content: { parts: [{ text }], role: "model" }, finishReason: "STOP", index: 0 }],
        ...(d.no_usage ? {} : { usageMetadata: { promptTokenCount: d.prompt, candidatesTokenCount: completion, totalTokenCount: d.prompt + completion } }),
        modelVersion: model,
      };
  }
}

/** The SSE frames of a streamed answer: [frames before the cut, what ends it]. */
function frames(provider: ProviderName, model: string, d: Directives, includeUsage: boolean) {
  const sse = (data: unknown, event?: string) =>
    (event ? `event: ${event}\n` : "") + `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
  const completion = d.completion ?? d.chunks;
  const usage = !d.no_usage;
  const text = (i: number) => `w${i + 1} `;
  const chunks: string[] = [];
  const head: string[] = [];
  let tail: string[] = [];
  let failure: string[] = [];
  switch (provider) {
    case "openai":
    case "mistral": {
      const chunk = (delta: unknown, finish: string | null, extra: Record<string, unknown> = {}) =>
        sse({ id: "chatcmpl-fake", object: "chat.completion.chunk", created: 1, model, choices: [{ index: 0, delta, finish_reason: finish }], ...extra });
      head.push(chunk({ role: "assistant", content: "" }, null));
      for (let i = 0; i < d.chunks; i++) chunks.push(chunk({ content: text(i) }, null));
      if (provider === "openai") {
        tail.push(chunk({}, "stop"));
        if (includeUsage && usage) {
          tail.push(sse({ id: "chatcmpl-fake", object: "chat.completion.chunk", created: 1, model, choices: [], usage: { prompt_tokens: d.prompt, completion_tokens: completion, total_tokens: d.prompt + completion } }));
        }
        failure = [sse({ error: { message: "The server had an error while processing your request", type: "server_error", param: null, code: null } })];
      } else {
        tail.push(chunk({ content: "" }, "stop", usage ? { usage: { prompt_tokens: d.prompt, completion_tokens: completion, total_tokens: d.prompt + completion } } : {}));
        failure = []; // Mistral's connection just drops
      }
      tail.push("data: [DONE]\n\n");
      break;
    }
    case "anthropic": {
      head.push(sse({ type: "message_start", message: { id: "msg_fake", type: "message", role: "assistant", model, content: [], stop_reason: null, stop_sequence: null, usage: usage ? { input_tokens: d.prompt, output_tokens: 1 } : {} } }, "message_start"));
      head.push(sse({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }, "content_block_start"));
      head.push(sse({ type: "ping" }, "ping"));
      for (let i = 0; i < d.chunks; i++) {
        chunks.push(sse({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: text(i) } }, "content_block_delta"));
      }
      tail = [
        sse({ type: "content_block_stop", index: 0 }, "content_block_stop"),
        sse({ type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: usage ? { output_tokens: completion } : {} }, "message_delta"),
        sse({ type: "message_stop" }, "message_stop"),
      ];
      failure = [sse({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } }, "error")];
      break;
    }
    case "gemini": {
      for (let i = 0; i < d.chunks; i++) {
        const last = i === d.chunks - 1;
        chunks.push(sse({
          candidates: [{ content: { parts: [{ text: text(i) }], role: "model" }, ...(last ? { finishReason: "STOP" } : {}), index: 0 }],
          ...(usage ? { usageMetadata: { promptTokenCount: d.prompt, ...(last ? { candidatesTokenCount: completion } : {}), totalTokenCount: d.prompt + (last ? completion : 0) } } : {}),
          modelVersion: model,
        }).replace(/\n\n$/, "\r\n\r\n"));
      }
      failure = []; // the connection drops without a finishReason
      break;
    }
  }
  return { head, chunks, tail, failure };
}

function startOne(provider: ProviderName, port: number, log: Recorded[]): Deno.HttpServer {
  return Deno.serve({ port, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/__requests") {
      const tag = url.searchParams.get("tag");
      return Response.json(log.filter((r) => r.provider === provider && (!tag || r.tag === tag)));
    }
    if (url.pathname === "/__reset") {
      log.length = 0;
      return Response.json({ ok: true });
    }
    const text = await req.text();
    let body: any = text;
    try {
      body = JSON.parse(text);
    } catch { /* keep text */ }
    let model = "";
    let stream = false;
    let pathOk = false;
    if (provider === "openai" || provider === "mistral") {
      pathOk = req.method === "POST" && url.pathname === "/v1/chat/completions";
      model = body?.model ?? "";
      stream = body?.stream === true;
    } else if (provider === "anthropic") {
      pathOk = req.method === "POST" && url.pathname === "/v1/messages";
      model = body?.model ?? "";
      stream = body?.stream === true;
    } else {
      const m = url.pathname.match(/^\/v1beta\/models\/([^/:]+):(generateContent|streamGenerateContent)$/);
      pathOk = req.method === "POST" && m !== null;
      model = m?.[1] ?? "";
      stream = m?.[2] === "streamGenerateContent" && url.searchParams.get("alt") === "sse";
    }
    const key = keyOf(provider, req.headers);
    const d = directives(lastUserText(provider, body), provider);
    const headers: Record<string, string> = {};
    req.headers.forEach((v, k) => (headers[k] = v));
    const rec: Recorded = { provider, path: url.pathname + url.search, key, headers, body, tag: d.tag, stream, aborted: false, finished: false };
    log.push(rec);
    if (!pathOk) return Response.json(errorBody(provider, 404), { status: 404 });
    if (!key || key.startsWith("bad-")) return Response.json(errorBody(provider, 401), { status: 401 });
    if (provider === "anthropic" && req.headers.get("anthropic-version") !== "2023-06-01") {
      return Response.json(errorBody(provider, 400), { status: 400 });
    }
    if (d.wait) await sleep(d.wait);
    if (d.status && d.status !== 200) {
      const h: Record<string, string> = {};
      if (d.retry_after !== undefined) h["retry-after"] = String(d.retry_after);
      if (provider === "anthropic" && d.status === 429) h["anthropic-ratelimit-requests-remaining"] = "0";
      if (provider === "openai" && d.status === 429) h["x-ratelimit-remaining-requests"] = "0";
      rec.finished = true;
      return Response.json(errorBody(provider, d.status, d.retry_after), { status: d.status, headers: h });
    }
    if (!stream) {
      rec.finished = true;
      return Response.json(buffered(provider, model, d));
    }
    const includeUsage = provider !== "openai" || body?.stream_options?.include_usage === true;
    const f = frames(provider, model, d, includeUsage);
    const cutAt = d.fail_after ?? d.hang_after;
    let cancelled = false;
    const out = new ReadableStream<Uint8Array>({
      async start(controller) {
        const send = (s: string) => {
          if (!cancelled) controller.enqueue(enc.encode(s));
        };
        try {
          for (const h of f.head) send(h);
          for (let i = 0; i < f.chunks.length; i++) {
            if (cutAt !== undefined && i === cutAt) break;
            await sleep(d.delay);
            if (cancelled) return;
            send(f.chunks[i]);
          }
          if (d.hang_after !== undefined) {
            while (!cancelled) await sleep(20);
            return;
          }
          if (d.fail_after !== undefined) {
            for (const x of f.failure) send(x);
            controller.close();
            return;
          }
          for (const t of f.tail) send(t);
          rec.finished = true;
          controller.close();
        } catch {
          // the client went away mid-write
        }
      },
      cancel() {
        cancelled = true;
        rec.aborted = true;
      },
    });
    req.signal.addEventListener("abort", () => {
      if (!rec.finished) rec.aborted = true;
      cancelled = true;
    });
    return new Response(out, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
  });
}

export function startFakeProviders(ports: Partial<Record<ProviderName, number>> = {}): FakeProviders {
  const log: Recorded[] = [];
  const servers = PROVIDERS.map((p) => startOne(p, ports[p] ?? 0, log));
  const urls = Object.fromEntries(
    PROVIDERS.map((p, i) => [p, `http://127.0.0.1:${(servers[i].addr as Deno.NetAddr).port}`]),
  ) as Record<ProviderName, string>;
  return {
    urls,
    requests: (tag?: string) => log.filter((r) => !tag || r.tag === tag),
    close: async () => {
      await Promise.all(servers.map((s) => s.shutdown()));
    },
  };
}

/** The requests a running fake (standalone, e.g. started by scripts/test) received with `tag`. */
export async function fakeRequests(baseUrl: string, tag: string): Promise<Recorded[]> {
  const r = await fetch(`${baseUrl}/__requests?tag=${encodeURIComponent(tag)}`);
  return await r.json();
}

if (import.meta.main) {
  const ports = Deno.args.map(Number);
  if (ports.length !== 4 || ports.some((p) => !Number.isInteger(p))) {
    console.error("usage: fake_ai_providers.ts <openai port> <anthropic port> <mistral port> <gemini port>");
    Deno.exit(2);
  }
  const f = startFakeProviders({ openai: ports[0], anthropic: ports[1], mistral: ports[2], gemini: ports[3] });
  console.log(JSON.stringify(f.urls));
}

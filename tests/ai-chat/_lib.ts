// Shared by the ai-chat end-to-end tests: the fake providers the stack was
// started with (scripts/test exports their base URLs), SSE reading, and
// database checks.
import { callFunction, createUser, need, stack, type TestUser, withDb } from "../support/stack.ts";
import { fakeRequests, type ProviderName, type Recorded } from "../support/fake_ai_providers.ts";

export const FN = "chat-completion";

export const fakeUrl: Record<ProviderName, string> = {
  get openai() {
    return need("OPENAI_BASE_URL");
  },
  get anthropic() {
    return need("ANTHROPIC_BASE_URL");
  },
  get mistral() {
    return need("MISTRAL_BASE_URL");
  },
  get gemini() {
    return need("AI_GEMINI_BASE_URL");
  },
};

export const MODELS: Record<ProviderName, string> = {
  openai: "gpt-4o-mini",
  anthropic: "claude-3-5-haiku-latest",
  mistral: "mistral-small-latest",
  gemini: "gemini-2.0-flash",
};

export function tag(): string {
  return crypto.randomUUID().slice(0, 12);
}

export async function requestsTo(provider: ProviderName, t: string): Promise<Recorded[]> {
  return await fakeRequests(fakeUrl[provider], t);
}

export interface SseEvent {
  id: string | null;
  event: string;
  data: any;
}

/** Parses event-stream text into events (comments skipped). */
export function parseSse(text: string): SseEvent[] {
  const out: SseEvent[] = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    let id: string | null = null, event = "message";
    const data: string[] = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith(":") || line === "") continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) {
      const raw = data.join("\n");
      let parsed: any = raw;
      try {
        parsed = JSON.parse(raw);
      } catch { /* keep text */ }
      out.push({ id, event, data: parsed });
    }
  }
  return out;
}

/** An open event stream read incrementally. */
export class SseReader {
  private buf = "";
  private dec = new TextDecoder();
  events: SseEvent[] = [];
  constructor(public response: Response, private reader: ReadableStreamDefaultReader<Uint8Array>, private abort: AbortController) {}

  /** Reads until `pred` holds for the events so far, or the stream ends. */
  async until(pred: (events: SseEvent[]) => boolean, timeoutMs = 20_000): Promise<SseEvent[]> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.events)) {
      if (Date.now() > deadline) throw new Error(`timed out; events so far: ${JSON.stringify(this.events)}`);
      const { done, value } = await this.reader.read();
      if (done) break;
      this.buf += this.dec.decode(value, { stream: true });
      const cut = this.buf.lastIndexOf("\n\n");
      if (cut >= 0) {
        this.events.push(...parseSse(this.buf.slice(0, cut)));
        this.buf = this.buf.slice(cut + 2);
      }
    }
    return this.events;
  }

  async toEnd(timeoutMs = 20_000): Promise<SseEvent[]> {
    return await this.until(() => false, timeoutMs).catch((e) => {
      throw e;
    });
  }

  /** Drops the connection, as a client losing its network would. */
  async disconnect() {
    this.abort.abort();
    await this.reader.cancel().catch(() => {});
  }
}

export async function openStream(
  user: TestUser,
  body: Record<string, unknown>,
  opts: { method?: string; query?: string; headers?: Record<string, string> } = {},
): Promise<SseReader> {
  const abort = new AbortController();
  const r = await fetch(stack.functionUrl(FN) + (opts.query ? `?${opts.query}` : ""), {
    method: opts.method ?? "POST",
    headers: {
      apikey: stack.anonKey,
      authorization: `Bearer ${user.token}`,
      "content-type": "application/json",
      ...(opts.headers ?? {}),
    },
    body: opts.method === "GET" ? undefined : JSON.stringify({ ...body, stream: true }),
    signal: abort.signal,
  });
  if (!r.body) throw new Error(`no body (status ${r.status})`);
  return new SseReader(r, r.body.getReader(), abort);
}

/** Reads an event stream to its end (for a stream that ends by itself). */
export async function streamAll(user: TestUser, body: Record<string, unknown>): Promise<{ status: number; events: SseEvent[] }> {
  const s = await openStream(user, body);
  if (s.response.status !== 200) {
    return { status: s.response.status, events: [{ id: null, event: "body", data: await s.response.text() }] };
  }
  const events = await s.until((ev) => ev.some((e) => ["done", "stopped", "error"].includes(e.event)));
  await s.disconnect();
  return { status: 200, events };
}

export function text(events: SseEvent[]): string {
  return events.filter((e) => e.event === "delta").map((e) => e.data.text).join("");
}

export async function complete(user: TestUser, body: Record<string, unknown>) {
  return await callFunction(FN, { token: user.token, body });
}

/** Exact cost of a call in USD as Postgres computes it from the price table (numeric text). */
export async function expectedCost(provider: string, model: string, prompt: number, completion: number): Promise<string> {
  return await withDb(async (sql) => {
    const [r] = await sql`select ((${prompt}::numeric * input_usd_per_mtok + ${completion}::numeric * output_usd_per_mtok)
                                   / 1000000)::numeric(20,10)::text as cost
                            from ai_model_prices where provider = ${provider} and model = ${model}`;
    return r.cost;
  });
}

export async function usageRow(messageId: string) {
  return await withDb(async (sql) => {
    const [r] = await sql`select status, usage_source, cost_usd::text as cost_usd, reserved_usd::text as reserved_usd,
                                 prompt_tokens, completion_tokens, provider, model
                            from api_usage where message_id = ${messageId}`;
    return r;
  });
}

export async function messageRow(messageId: string) {
  return await withDb(async (sql) => {
    const [r] = await sql`select status, content, provider, model, cost_usd::text as cost_usd from messages where id = ${messageId}`;
    return r;
  });
}

export async function newUser(limitUsd?: number): Promise<TestUser> {
  const u = await createUser();
  if (limitUsd !== undefined) {
    await withDb((sql) => sql`insert into ai_budgets (user_id, spend_limit_usd) values (${u.id}, ${limitUsd})`);
  }
  return u;
}

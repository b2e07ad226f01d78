// A stand-in for the Gemini REST API (generateContent, v1beta) on 127.0.0.1,
// for end-to-end tests: point GEMINI_BASE_URL at `url` and script failures.
//
// It speaks the documented wire format: requests are
//   POST /v1beta/models/{model}:generateContent  (key in x-goog-api-key)
// answers are {candidates, promptFeedback, usageMetadata, modelVersion} and
// failures are {error: {code, message, status, details}}.
//
// Test controls (same server):
//   GET  /__requests  -> every generateContent request received, in order
//   POST /__script    -> replace the queue of scripted answers; body is one
//                        step or an array of steps, each used once, e.g.
//                        [{"status":500},{"status":500},{"status":200}],
//                        {"status":429,"retry_after":2}, {"finish":"SAFETY"}
//   POST /__reset     -> clear requests and script
// With an empty queue it answers 200, echoing the last user message.
//
// In-process: `const g = await startFakeGemini()`; standalone:
//   deno run --allow-net --allow-env tests/support/fake_gemini.ts [port]
// (FAKE_GEMINI_API_KEY, when set, is the only key accepted).

/** One scripted answer. Omitted fields take the default 200 behaviour. */
export interface Step {
  /** HTTP status; anything but 200 answers with Google's error JSON. */
  status?: number;
  /** Seconds for a Retry-After header. */
  retry_after?: number;
  /** A google.rpc.RetryInfo detail, e.g. "17s". */
  retry_delay?: string;
  /** Error message (non-200) or answer text (200). */
  message?: string;
  text?: string;
  /** finishReason: SAFETY, RECITATION, MAX_TOKENS, ... */
  finish?: string;
  /** promptFeedback.blockReason: the prompt is blocked, no candidates. */
  block_reason?: string;
  /** Wait before answering (to provoke client timeouts). */
  delay_ms?: number;
}

export interface RecordedRequest {
  method: string;
  path: string;
  model: string | null;
  /** The x-goog-api-key header as received (null when missing). */
  api_key: string | null;
  /** True when the key was (also) put in the URL, which clients must not do. */
  key_in_url: boolean;
  content_type: string | null;
  /** Parsed JSON body, or the raw text when it is not JSON. */
  body: unknown;
  received_at: string;
}

export interface FakeGemini {
  url: string;
  port: number;
  requests(): RecordedRequest[];
  script(steps: Step | Step[]): void;
  reset(): void;
  close(): Promise<void>;
}

export interface FakeGeminiOptions {
  port?: number;
  /** When set, any other key is refused as Google refuses an invalid key. */
  apiKey?: string;
}

const STATUS_NAMES: Record<number, string> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  429: "RESOURCE_EXHAUSTED",
  500: "INTERNAL",
  503: "UNAVAILABLE",
  504: "DEADLINE_EXCEEDED",
};

const DEFAULT_MESSAGES: Record<number, string> = {
  400: "Request contains an invalid argument.",
  403: "The caller does not have permission",
  404: "Requested entity was not found.",
  429: "Resource has been exhausted (e.g. check quota).",
  500:
    "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
  503: "The model is overloaded. Please try again later.",
  504: "Deadline expired before operation could complete.",
};

const BLOCKING_FINISH = new Set([
  "SAFETY",
  "RECITATION",
  "BLOCKLIST",
  "PROHIBITED_CONTENT",
  "SPII",
  "IMAGE_SAFETY",
]);

const ROUTE = /^\/v1beta\/models\/([^/:]+):generateContent$/;

function json(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=UTF-8", ...headers },
  });
}

function googleError(
  code: number,
  message: string,
  details: unknown[] = [],
  headers: Record<string, string> = {},
): Response {
  const status = STATUS_NAMES[code] ??
    (code >= 500 ? "INTERNAL" : "FAILED_PRECONDITION");
  return json(code, { error: { code, message, status, details } }, headers);
}

/** Rough token count (about four characters a token), like the real counts' scale. */
function tokens(text: string): number {
  return Math.ceil([...text].length / 4);
}

interface Part {
  text?: unknown;
}
interface Content {
  role?: unknown;
  parts?: unknown;
}

function textOf(content: Content): string {
  const parts = Array.isArray(content.parts) ? (content.parts as Part[]) : [];
  return parts.map((p) => (typeof p?.text === "string" ? p.text : "")).join("");
}

/** Checks what the real API checks first; a message when the body is unusable. */
function invalidBody(body: unknown): string | null {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return "Invalid JSON payload received. Expected an object.";
  }
  const contents = (body as { contents?: unknown }).contents;
  if (!Array.isArray(contents) || contents.length === 0) {
    return "* GenerateContentRequest.contents: contents is not specified\n";
  }
  for (const [i, c] of (contents as Content[]).entries()) {
    if (c.role !== undefined && c.role !== "user" && c.role !== "model") {
      return `Please use a valid role: user, model. (contents[${i}].role)`;
    }
    if (!Array.isArray(c.parts) || c.parts.length === 0) {
      return `* GenerateContentRequest.contents[${i}].parts: contents.parts must not be empty.\n`;
    }
  }
  return null;
}

function answer(
  step: Step,
  body: Record<string, unknown>,
  model: string,
): Response {
  const contents = body.contents as Content[];
  const system = textOf((body.systemInstruction ?? {}) as Content);
  const promptText = system + contents.map(textOf).join("");
  const promptTokenCount = tokens(promptText);
  if (step.block_reason) {
    return json(200, {
      promptFeedback: { blockReason: step.block_reason },
      usageMetadata: { promptTokenCount, totalTokenCount: promptTokenCount },
      modelVersion: model,
    });
  }
  const finish = step.finish ?? "STOP";
  if (BLOCKING_FINISH.has(finish)) {
    return json(200, {
      candidates: [{
        finishReason: finish,
        index: 0,
        safetyRatings: [{
          category: "HARM_CATEGORY_DANGEROUS_CONTENT",
          probability: "HIGH",
          blocked: true,
        }],
      }],
      usageMetadata: { promptTokenCount, totalTokenCount: promptTokenCount },
      modelVersion: model,
    });
  }
  const lastUser = [...contents].reverse().find((c) =>
    c.role === "user" || c.role === undefined
  );
  let text = step.text ?? step.message ??
    `Fake Gemini answer to: ${lastUser ? textOf(lastUser) : ""}`;
  if (finish === "MAX_TOKENS") {
    text = text.slice(0, Math.max(1, Math.floor(text.length / 2)));
  }
  const candidatesTokenCount = tokens(text);
  return json(200, {
    candidates: [{
      content: { role: "model", parts: [{ text }] },
      finishReason: finish,
      index: 0,
    }],
    usageMetadata: {
      promptTokenCount,
      candidatesTokenCount,
      totalTokenCount: promptTokenCount + candidatesTokenCount,
    },
    modelVersion: model,
  });
}

function failure(step: Step): Response {
  const code = step.status ?? 500;
  const details: unknown[] = [];
  const headers: Record<string, string> = {};
  if (step.retry_delay) {
    details.push({
      "@type": "type.googleapis.com/google.rpc.RetryInfo",
      retryDelay: step.retry_delay,
    });
  }
  if (step.retry_after !== undefined) {
    headers["retry-after"] = String(step.retry_after);
  }
  return googleError(
    code,
    step.message ?? DEFAULT_MESSAGES[code] ?? `HTTP ${code}`,
    details,
    headers,
  );
}

export function startFakeGemini(
  options: FakeGeminiOptions = {},
): Promise<FakeGemini> {
  let recorded: RecordedRequest[] = [];
  let queue: Step[] = [];

  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (url.pathname === "/__requests" && req.method === "GET") {
      return json(200, recorded);
    }
    if (url.pathname === "/__reset" && req.method === "POST") {
      recorded = [];
      queue = [];
      return json(200, { ok: true });
    }
    if (url.pathname === "/__script" && req.method === "POST") {
      const steps = await req.json().catch(() => null);
      if (steps === null || typeof steps !== "object") {
        return json(400, { error: "send a step or an array of steps" });
      }
      queue = Array.isArray(steps) ? steps : [steps];
      return json(200, { queued: queue.length });
    }

    const match = ROUTE.exec(url.pathname);
    if (!match) return googleError(404, `Method not found: ${url.pathname}`);
    if (req.method !== "POST") return googleError(404, "Method not found.");

    const raw = await req.text();
    let body: unknown = raw;
    try {
      body = JSON.parse(raw);
    } catch {
      // Recorded as text; answered below.
    }
    const apiKey = req.headers.get("x-goog-api-key");
    recorded.push({
      method: req.method,
      path: url.pathname,
      model: match[1],
      api_key: apiKey,
      key_in_url: url.searchParams.has("key"),
      content_type: req.headers.get("content-type"),
      body,
      received_at: new Date().toISOString(),
    });

    if (!apiKey && !url.searchParams.has("key")) {
      return googleError(
        403,
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
      );
    }
    if (
      options.apiKey !== undefined &&
      (apiKey ?? url.searchParams.get("key")) !== options.apiKey
    ) {
      return googleError(
        400,
        "API key not valid. Please pass a valid API key.",
        [
          {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            reason: "API_KEY_INVALID",
            domain: "googleapis.com",
            metadata: { service: "generativelanguage.googleapis.com" },
          },
        ],
      );
    }
    if (typeof body === "string") {
      return googleError(
        400,
        `Invalid JSON payload received. Unexpected token.`,
      );
    }
    const invalid = invalidBody(body);
    if (invalid) return googleError(400, invalid);

    const step = queue.shift() ?? {};
    if (step.delay_ms) await new Promise((r) => setTimeout(r, step.delay_ms));
    if (step.status !== undefined && step.status !== 200) return failure(step);
    return answer(step, body as Record<string, unknown>, match[1]);
  };

  const server = Deno.serve(
    { hostname: "127.0.0.1", port: options.port ?? 0, onListen: () => {} },
    handler,
  );
  const port = server.addr.port;
  // A promise so callers can await it whether or not listening ever becomes asynchronous.
  return Promise.resolve({
    url: `http://127.0.0.1:${port}`,
    port,
    requests: () => structuredClone(recorded),
    script: (steps) => {
      queue = Array.isArray(steps) ? [...steps] : [steps];
    },
    reset: () => {
      recorded = [];
      queue = [];
    },
    close: () => server.shutdown(),
  });
}

if (import.meta.main) {
  const port = Number(Deno.args[0] ?? Deno.env.get("FAKE_GEMINI_PORT") ?? 0);
  const g = await startFakeGemini({
    port,
    apiKey: Deno.env.get("FAKE_GEMINI_API_KEY") || undefined,
  });
  console.log(g.url);
}

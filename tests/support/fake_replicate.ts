// A stand-in for Replicate's HTTP API on 127.0.0.1 (REPLICATE_BASE_URL), as
// documented: POST /v1/predictions {version, input, webhook,
// webhook_events_filter} -> 201 prediction; GET /v1/predictions/{id};
// POST /v1/predictions/{id}/cancel; `Authorization: Bearer <token>`;
// problem-document errors {title, detail, status}. Webhooks are POSTed to
// the prediction's webhook URL signed as Replicate signs them (Standard
// Webhooks: webhook-id, webhook-timestamp, webhook-signature "v1,<base64
// HMAC-SHA256 of id.timestamp.body>" keyed with the whsec_ secret's bytes).
// Outputs are served at /files/<id>.mp4 (video/mp4), standing in for
// replicate.delivery.
//
// Test controls:
//   POST /__finish {id, status: "succeeded" | "failed", error?, deliver?: true}
//        -> the prediction ends; its webhook is delivered unless deliver is false;
//           answers {webhook: {status, body}, delivery: {headers, body}}
//   GET  /__deliveries -> every webhook delivered {headers, body, status}
//   GET  /__requests   -> API requests received

import { webhookSignature } from "./standard_webhooks.ts";

export interface FakeReplicate {
  url: string;
  token: string;
  webhookSecret: string;
  close(): Promise<void>;
}

interface Prediction {
  id: string;
  model: string;
  version: string;
  input: Record<string, unknown>;
  logs: string;
  output: unknown;
  error: unknown;
  status: string;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  metrics: Record<string, unknown>;
  urls: Record<string, string>;
  webhook?: string;
}

/** The Standard Webhooks signature of a delivery. */
export async function signWebhook(secret: string, id: string, timestamp: number, body: string): Promise<string> {
  return await webhookSignature(secret, id, timestamp, body);
}

export function startFakeReplicate(token: string, webhookSecret: string): FakeReplicate {
  const predictions = new Map<string, Prediction>();
  const deliveries: { headers: Record<string, string>; body: string; status: number }[] = [];
  const requests: { method: string; path: string; body: unknown }[] = [];
  let base = "";
  const problem = (status: number, title: string, detail: string) =>
    new Response(JSON.stringify({ title, detail, status }), {
      status,
      headers: { "content-type": "application/problem+json" },
    });
  const ok = (status: number, body: unknown) =>
    new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
  const publicView = (p: Prediction) => {
    const { webhook: _w, ...rest } = p;
    return rest;
  };

  const deliver = async (p: Prediction) => {
    if (!p.webhook) return null;
    const body = JSON.stringify(publicView(p));
    const id = `msg_${crypto.randomUUID().replaceAll("-", "")}`;
    const ts = Math.floor(Date.now() / 1000);
    const headers = {
      "content-type": "application/json",
      "webhook-id": id,
      "webhook-timestamp": String(ts),
      "webhook-signature": await signWebhook(webhookSecret, id, ts, body),
    };
    const r = await fetch(p.webhook, { method: "POST", headers, body });
    const answer = await r.text();
    deliveries.push({ headers, body, status: r.status });
    return { webhook: { status: r.status, body: answer }, delivery: { headers, body } };
  };

  const handler = async (req: Request): Promise<Response> => {
    const u = new URL(req.url);
    const p = u.pathname;
    const text = req.method === "GET" ? "" : await req.text();
    if (p === "/__deliveries") return ok(200, deliveries);
    if (p === "/__requests") return ok(200, requests);
    if (p === "/__finish") {
      const b = JSON.parse(text);
      const pred = predictions.get(b.id);
      if (!pred) return problem(404, "Not found", "no such prediction");
      pred.status = b.status;
      pred.completed_at = new Date().toISOString();
      pred.metrics = { predict_time: 12.5 };
      if (b.status === "succeeded") pred.output = `${base}/files/${pred.id}.mp4`;
      else pred.error = b.error ?? "CUDA out of memory";
      if (b.deliver === false) return ok(200, { prediction: publicView(pred) });
      return ok(200, await deliver(pred));
    }
    const file = p.match(/^\/files\/([a-z0-9]+)\.mp4$/);
    if (file && req.method === "GET") {
      const bytes = new TextEncoder().encode(`\u0000\u0000\u0000\u0018ftypmp42 fake video for ${file[1]}`);
      return new Response(bytes, { status: 200, headers: { "content-type": "video/mp4" } });
    }
    requests.push({ method: req.method, path: p, body: text ? JSON.parse(text) : null });
    if (req.headers.get("authorization") !== `Bearer ${token}`) {
      return problem(401, "Unauthenticated", "You did not pass a valid authentication token");
    }
    if (req.method === "POST" && p === "/v1/predictions") {
      const b = JSON.parse(text || "{}");
      if (typeof b.version !== "string" || !b.version) {
        return problem(422, "Invalid version or not permitted", "version is required");
      }
      if (!b.input?.input_image) return problem(422, "Input validation failed", "input: input_image is required");
      const id = crypto.randomUUID().replaceAll("-", "").slice(0, 26);
      const pred: Prediction = {
        id,
        model: "stability-ai/stable-video-diffusion",
        version: b.version,
        input: b.input,
        logs: "",
        output: null,
        error: null,
        status: "starting",
        created_at: new Date().toISOString(),
        started_at: null,
        completed_at: null,
        metrics: {},
        urls: { get: `${base}/v1/predictions/${id}`, cancel: `${base}/v1/predictions/${id}/cancel` },
        webhook: b.webhook,
      };
      predictions.set(id, pred);
      return ok(201, publicView(pred));
    }
    const one = p.match(/^\/v1\/predictions\/([a-z0-9]+)(\/cancel)?$/);
    if (one) {
      const pred = predictions.get(one[1]);
      if (!pred) return problem(404, "Not found", "The requested resource could not be found.");
      if (one[2] && req.method === "POST") {
        if (!["succeeded", "failed", "canceled"].includes(pred.status)) {
          pred.status = "canceled";
          pred.completed_at = new Date().toISOString();
        }
        return ok(200, publicView(pred));
      }
      if (req.method === "GET") return ok(200, publicView(pred));
    }
    return problem(404, "Not found", "The requested resource could not be found.");
  };

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
  base = `http://127.0.0.1:${server.addr.port}`;
  return { url: base, token, webhookSecret, close: () => server.shutdown() };
}

// A local stand-in for LlamaParse's parse API (POST /api/v2/parse, JSON body
// with source_url and webhook_configurations, Bearer key; answers the job
// {id, project_id, status}). Like LlamaParse it downloads the document from
// source_url, so a test sees that the presigned URL really serves the bytes.
// GET /__requests lists what it received (for tests; not part of the API).
//
//   deno run --allow-net --allow-env tests/uploads/fake_llamaparse.ts <port>
// FAKE_LLAMA_PARSE_API_KEY is the key it accepts.

interface Received {
  id: string;
  source_url: string;
  webhook_url: string | null;
  fetched_status: number;
  fetched_bytes: number;
  fetched_prefix: string;
}

export function startFakeLlamaParse(port: number, apiKey: string): Deno.HttpServer<Deno.NetAddr> {
  const received: Received[] = [];
  const json = (status: number, body: unknown) => Response.json(body, { status });
  return Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    if (req.method === "GET" && url.pathname === "/__requests") return json(200, received);
    if (req.method !== "POST" || url.pathname !== "/api/v2/parse") return json(404, { detail: "Not Found" });
    if (req.headers.get("authorization") !== `Bearer ${apiKey}`) return json(401, { detail: "Invalid API key" });
    let body: any;
    try {
      body = await req.json();
    } catch {
      return json(422, { detail: "body is not JSON" });
    }
    if (typeof body?.source_url !== "string") return json(422, { detail: "file_id or source_url is required" });
    let fetched_status = 0, fetched_bytes = 0, fetched_prefix = "";
    try {
      const r = await fetch(body.source_url);
      const bytes = new Uint8Array(await r.arrayBuffer());
      fetched_status = r.status;
      fetched_bytes = bytes.length;
      fetched_prefix = new TextDecoder().decode(bytes.slice(0, 5));
    } catch {
      fetched_status = -1;
    }
    const id = crypto.randomUUID();
    received.push({
      id,
      source_url: body.source_url,
      webhook_url: body.webhook_configurations?.[0]?.webhook_url ?? null,
      fetched_status,
      fetched_bytes,
      fetched_prefix,
    });
    return json(200, { id, project_id: "fake-project", status: "PENDING" });
  });
}

if (import.meta.main) {
  const port = Number(Deno.args[0]);
  const key = Deno.env.get("FAKE_LLAMA_PARSE_API_KEY");
  if (!port || !key) {
    console.error("usage: FAKE_LLAMA_PARSE_API_KEY=... fake_llamaparse.ts <port>");
    Deno.exit(2);
  }
  startFakeLlamaParse(port, key);
}

// scripts/bench uploads: the upload pipeline through the local stack.
//
// 1. Latency under --clients concurrent clients (each its own user), against
//    the seed's promises: initialise (POST upload-handler) < 500 ms, progress
//    update (POST progress-tracker) < 100 ms, webhook (POST processing-webhook,
//    Standard Webhooks signed) < 200 ms. p50 / p95 / p99 per endpoint.
// 2. A --mb MB upload, same machine, same run: the V2UploadClient (hashing in
//    Rust, presigned checksummed parts in parallel, verification by the server)
//    against tus-js-client to the local TUS endpoint (/storage/v1/upload/resumable,
//    6 MB chunks, one at a time as TUS sends them): seconds and the ratio.
//
// Without SUPABASE_URL (and its companions from a stack's env file, plus
// UPLOAD_WEBHOOK_SECRET_INTERNAL) it starts a private stack on free ports and
// stops it at the end. Nothing asserts on timing: figures are printed.
import { Buffer } from "node:buffer";
import * as tus from "tus-js-client";
import postgres from "postgres";
import { userAccessToken } from "../../scripts/local/jwt.ts";
import { webhookHeaders } from "../../tests/support/standard_webhooks.ts";
import { V2UploadClient } from "../../clients/upload-client/js/v2_upload_client.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const args = Deno.args;
const opt = (name: string, def: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const CLIENTS = opt("clients", 20);
const PER_CLIENT = opt("requests", 10);
const MB = opt("mb", 50);
const PARALLEL = opt("parallel", 4);
/** The paced pass: each client reports once per this many ms (a progress bar's pace). */
const PACE_MS = opt("pace-ms", 250);

interface Stack {
  url: string;
  anonKey: string;
  serviceKey: string;
  jwtSecret: string;
  dbUrl: string;
  internalSecret: string;
  stop(): Promise<void>;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function readEnv(text: string): Record<string, string> {
  const e: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) e[line.slice(0, i)] = line.slice(i + 1);
  }
  return e;
}

async function startPrivateStack(): Promise<Stack> {
  const stateDir = await Deno.makeTempDir({ prefix: "edgeworks-bench-up." });
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!k.startsWith("EDGEWORKS_") && !k.startsWith("SUPABASE_") && !k.startsWith("UPLOAD_")) env[k] = v;
  }
  const internalSecret = `whsec_${btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(24))))}`;
  Object.assign(env, {
    EDGEWORKS_STATE_DIR: stateDir,
    EDGEWORKS_API_PORT: String(freePort()),
    EDGEWORKS_DB_PORT: String(freePort()),
    EDGEWORKS_REST_PORT: String(freePort()),
    EDGEWORKS_S3_PORT: String(freePort()),
    EDGEWORKS_NO_CRON: "1",
    UPLOAD_WEBHOOK_SECRET_INTERNAL: internalSecret,
  });
  const serve = (a: string[]) =>
    new Deno.Command(`${ROOT}/scripts/serve`, { args: a, cwd: ROOT, env, clearEnv: true, stdin: "null" }).output();
  const stop = async () => {
    await serve(["--stop"]);
    await Deno.remove(stateDir, { recursive: true }).catch(() => {});
  };
  console.error(`starting a private stack in ${stateDir} ...`);
  const out = await serve(["--detach", "--no-build"]);
  if (!out.success) {
    await stop();
    throw new Error(`the private stack did not start:\n${new TextDecoder().decode(out.stderr).slice(-3000)}`);
  }
  const e = readEnv(await Deno.readTextFile(`${stateDir}/env`));
  return {
    url: e.SUPABASE_URL,
    anonKey: e.SUPABASE_ANON_KEY,
    serviceKey: e.SUPABASE_SERVICE_ROLE_KEY,
    jwtSecret: e.EDGEWORKS_JWT_SECRET,
    dbUrl: e.EDGEWORKS_DB_URL,
    internalSecret,
    stop,
  };
}

function existingStack(): Stack | null {
  const g = (k: string) => Deno.env.get(k) ?? "";
  if (!g("SUPABASE_URL")) return null;
  for (const k of ["SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "EDGEWORKS_JWT_SECRET", "EDGEWORKS_DB_URL"]) {
    if (!g(k)) throw new Error(`SUPABASE_URL is set but ${k} is not: source the stack's env file`);
  }
  if (!g("UPLOAD_WEBHOOK_SECRET_INTERNAL")) {
    throw new Error("UPLOAD_WEBHOOK_SECRET_INTERNAL is not set: the stack's functions need it for the webhook figures");
  }
  return {
    url: g("SUPABASE_URL").replace(/\/+$/, ""),
    anonKey: g("SUPABASE_ANON_KEY"),
    serviceKey: g("SUPABASE_SERVICE_ROLE_KEY"),
    jwtSecret: g("EDGEWORKS_JWT_SECRET"),
    dbUrl: g("EDGEWORKS_DB_URL"),
    internalSecret: g("UPLOAD_WEBHOOK_SECRET_INTERNAL"),
    stop: async () => {},
  };
}

const enc = new TextEncoder();

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}
const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function summary(name: string, ms: number[], promise: number, failures: number) {
  const s = [...ms].sort((a, b) => a - b);
  const p50 = pct(s, 50), p95 = pct(s, 95);
  const verdict = p95 < promise ? "kept" : p50 < promise ? "p50 kept, p95 over" : "NOT kept";
  console.log(
    `${name.padEnd(18)} n=${String(s.length).padStart(4)}  p50 ${p50.toFixed(1).padStart(7)} ms  p95 ${
      p95.toFixed(1).padStart(7)
    } ms  p99 ${pct(s, 99).toFixed(1).padStart(7)} ms  promise < ${promise} ms: ${verdict}${
      failures ? `  (${failures} failed)` : ""
    }`,
  );
}

async function timed(f: () => Promise<Response>): Promise<[number, Response]> {
  const t = performance.now();
  const r = await f();
  return [performance.now() - t, r];
}

async function main() {
  const s = existingStack() ?? await startPrivateStack();
  const sql = postgres(s.dbUrl, { max: 2, onnotice: () => {} });
  try {
    const fn = (name: string) => `${s.url}/functions/v1/${name}`;
    const users = Array.from({ length: CLIENTS }, () => crypto.randomUUID());
    for (const id of users) {
      await sql`insert into auth.users (id, aud, role, email) values (${id}, 'authenticated', 'authenticated', ${`bench-${id}@test.local`})`;
    }
    const tokens = await Promise.all(users.map((u) => userAccessToken({ secret: s.jwtSecret, apiUrl: s.url, sub: u })));
    const initBody = async (i: number, j: number) => {
      const text = enc.encode(`bench document ${i}/${j} ${crypto.randomUUID()}\n`);
      return {
        text,
        body: {
          filename: `b${j}.txt`,
          contentType: "text/plain",
          fileSize: text.length,
          sha256: hex(await sha256(text)),
        },
      };
    };
    const init = (token: string, body: unknown) =>
      fetch(fn("upload-handler"), {
        method: "POST",
        headers: { apikey: s.anonKey, authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });

    // Warm every function's process (the first request boots it).
    for (let w = 0; w < 3; w++) {
      const { body } = await initBody(0, 1000 + w);
      await (await init(tokens[0], body)).body?.cancel();
    }

    // --- initialise ---------------------------------------------------------
    const initMs: number[] = [];
    let initFail = 0;
    const docs: { token: string; id: string; text: Uint8Array<ArrayBuffer>; part: any }[][] = users.map(() => []);
    await Promise.all(tokens.map(async (token, i) => {
      for (let j = 0; j < PER_CLIENT; j++) {
        const { text, body } = await initBody(i, j);
        const [ms, r] = await timed(() => init(token, body));
        const json = await r.json();
        if (r.status !== 200) initFail++;
        else {
          initMs.push(ms);
          docs[i].push({ token, id: json.data.documentId, text, part: json.data.parts[0] });
        }
      }
    }));

    // --- progress updates (service role) -------------------------------------
    const progress = (id: string, p: number) =>
      fetch(fn("progress-tracker"), {
        method: "POST",
        headers: { apikey: s.anonKey, authorization: `Bearer ${s.serviceKey}`, "content-type": "application/json" },
        body: JSON.stringify({ documentId: id, stage: "upload", progress: p }),
      });
    await (await progress(docs[0][0].id, 1)).body?.cancel();
    const progMs: number[] = [];
    let progFail = 0;
    await Promise.all(docs.map(async (mine) => {
      for (let j = 0; j < PER_CLIENT * 2; j++) {
        const d = mine[j % mine.length];
        const [ms, r] = await timed(() => progress(d.id, Math.min(90, 2 + j * 4)));
        await r.body?.cancel();
        if (r.status !== 200) progFail++;
        else progMs.push(ms);
      }
    }));

    // Finish one upload per client so a processing document receives the webhooks.
    const processing: string[] = [];
    await Promise.all(docs.map(async (mine) => {
      const d = mine[0];
      const h: Record<string, string> = {};
      for (const [k, v] of Object.entries(d.part.headers as Record<string, string>)) {
        if (k !== "content-length") h[k] = v;
      }
      await (await fetch(d.part.url, { method: "PUT", headers: h, body: d.text })).body?.cancel();
      const r = await fetch(fn("upload-handler"), {
        method: "PUT",
        headers: { apikey: s.anonKey, authorization: `Bearer ${d.token}`, "content-type": "application/json" },
        body: JSON.stringify({ documentId: d.id, action: "complete" }),
      });
      if (r.status === 200) processing.push(d.id);
      await r.body?.cancel();
    }));

    // --- webhooks (Standard Webhooks, internal source) -----------------------
    const webhook = async (id: string, p: number) => {
      const body = JSON.stringify({
        source: "internal",
        documentId: id,
        status: "processing",
        step: "parse",
        progress: p,
      });
      return await fetch(fn("processing-webhook"), {
        method: "POST",
        headers: {
          apikey: s.anonKey,
          "content-type": "application/json",
          ...await webhookHeaders(s.internalSecret, body),
        },
        body,
      });
    };
    await (await webhook(processing[0], 1)).body?.cancel();
    const hookMs: number[] = [];
    let hookFail = 0;
    await Promise.all(processing.map(async (id) => {
      for (let j = 0; j < PER_CLIENT * 2; j++) {
        const t = performance.now();
        const r = await webhook(id, Math.min(95, 5 + j * 4));
        const ms = performance.now() - t;
        await r.body?.cancel();
        if (r.status !== 200) hookFail++;
        else hookMs.push(ms);
      }
    }));

    // The same two calls at a client's pace: each client once per PACE_MS.
    const paced = async (n: number, f: (j: number) => Promise<Response>, out: number[]) => {
      let failed = 0;
      for (let j = 0; j < n; j++) {
        const start = performance.now();
        const r = await f(j);
        const ms = performance.now() - start;
        await r.body?.cancel();
        if (r.status === 200) out.push(ms);
        else failed++;
        await new Promise((res) => setTimeout(res, Math.max(0, PACE_MS - ms)));
      }
      return failed;
    };
    const progPaced: number[] = [], hookPaced: number[] = [];
    const progPacedFail = (await Promise.all(
      docs.map((mine) =>
        paced(PER_CLIENT * 2, (j) => progress(mine[1 % mine.length].id, Math.min(95, 5 + j * 4)), progPaced)
      ),
    )).reduce((a, b) => a + b, 0);
    const hookPacedFail = (await Promise.all(
      processing.map((id) => paced(PER_CLIENT * 2, (j) => webhook(id, Math.min(99, 10 + j * 4)), hookPaced)),
    )).reduce((a, b) => a + b, 0);

    console.log(`\nupload pipeline latency, ${CLIENTS} concurrent clients (one user each), 2-core machine`);
    console.log("closed loop (each client sends its next request as soon as the last one answers):");
    summary("initialise", initMs, 500, initFail);
    summary("progress update", progMs, 100, progFail);
    summary("webhook", hookMs, 200, hookFail);
    console.log(
      `paced (each client once per ${PACE_MS} ms, ${Math.round((CLIENTS * 1000) / PACE_MS)} requests/s in all):`,
    );
    summary("progress update", progPaced, 100, progPacedFail);
    summary("webhook", hookPaced, 200, hookPacedFail);

    // --- a large upload: ours vs tus-js-client --------------------------------
    const size = MB * 1024 * 1024;
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65536)));
    bytes.set(enc.encode("%PDF-1.7\n"), 0);
    const file = new File([bytes], "bench.pdf", { type: "application/pdf" });

    // Time spent in the completion call (the server's checks against storage).
    let completeMs = 0;
    const client = new V2UploadClient(s.url, s.anonKey, {
      accessToken: tokens[0],
      concurrency: PARALLEL,
      enableRealtime: false,
      store: null,
      fetch: async (input, init) => {
        const t = performance.now();
        const r = await fetch(input, init);
        if (typeof init?.body === "string" && init.body.includes('"complete"')) completeMs += performance.now() - t;
        return r;
      },
    });
    const t0 = performance.now();
    const result = await client.initializeUpload(file);
    const t1 = performance.now();
    await client.uploadFile(file, result);
    const t2 = performance.now();
    const ours = (t2 - t0) / 1000;

    const tusStart = performance.now();
    await new Promise<void>((resolve, reject) => {
      const up = new tus.Upload(Buffer.from(bytes), {
        endpoint: `${s.url}/storage/v1/upload/resumable`,
        chunkSize: 6 * 1024 * 1024,
        retryDelays: [],
        uploadDataDuringCreation: true,
        removeFingerprintOnSuccess: true,
        headers: { authorization: `Bearer ${s.serviceKey}`, "x-upsert": "true" },
        metadata: {
          bucketName: "documents",
          objectName: `${users[0]}/tus-${crypto.randomUUID()}.pdf`,
          contentType: "application/pdf",
          cacheControl: "3600",
        },
        onError: reject,
        onSuccess: () => resolve(),
      });
      up.start();
    });
    const theirs = (performance.now() - tusStart) / 1000;
    console.log(`\n${MB} MB upload, same stack, same run`);
    console.log(
      `V2UploadClient   ${ours.toFixed(2)} s  (hash + plan + init ${
        ((t1 - t0) / 1000).toFixed(2)
      } s; ${result.parts.length} checksummed parts, ${PARALLEL} in parallel, ${
        ((t2 - t1 - completeMs) / 1000).toFixed(2)
      } s; completion ${(completeMs / 1000).toFixed(2)} s: size, type and SHA-256 read back from storage)`,
    );
    console.log(`tus-js-client    ${theirs.toFixed(2)} s  (6 MB chunks, sequential, no checksum or verification)`);
    console.log(`ratio            ${(theirs / ours).toFixed(2)}x (tus time / ours; above 1 means ours is faster)`);
  } finally {
    await sql.end({ timeout: 5 });
    await s.stop();
  }
}

await main();

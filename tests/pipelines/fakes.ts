// What the pipelines' end-to-end tests know about their fakes: the settings
// tests/support/fake_pipelines.ts wrote (exported by scripts/test), and a
// client for each fake's test controls.
import { callFunction, need, stack, type TestUser } from "../support/stack.ts";

export const PLATFORMS = ["instagram", "twitter", "linkedin", "tiktok", "google", "facebook"] as const;
export type Platform = typeof PLATFORMS[number];

export const oauthFake = (p: Platform) => need(`OAUTH_${p.toUpperCase()}_BASE_URL`);
export const replicateFake = () => need("REPLICATE_BASE_URL");

async function control(base: string, path: string, body?: unknown): Promise<any> {
  const r = await fetch(`${base}${path}`, body === undefined ? {} : { method: "POST", body: JSON.stringify(body) });
  return await r.json();
}

export const fakeOAuth = (p: Platform) => ({
  requests: (): Promise<any[]> => control(oauthFake(p), "/__requests"),
  posts: (): Promise<any[]> => control(oauthFake(p), "/__posts"),
  config: (c: Record<string, unknown>) => control(oauthFake(p), "/__config", c),
  script: (s: unknown) => control(oauthFake(p), "/__script", s),
  reset: () => control(oauthFake(p), "/__reset", {}),
});

export const fakeReplicate = {
  finish: (b: Record<string, unknown>): Promise<any> => control(replicateFake(), "/__finish", b),
  deliveries: (): Promise<any[]> => control(replicateFake(), "/__deliveries"),
};

const b64url = (b: Uint8Array) =>
  btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

/** A `state` signed with the deployment's secret (to test expiry without waiting). */
export async function signState(claims: { u: string; p: string; n: string; e: number }): Promise<string> {
  const payload = b64url(new TextEncoder().encode(JSON.stringify(claims)));
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(need("OAUTH_STATE_SECRET")),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`oauth-state.${payload}`)));
  return `${payload}.${b64url(sig)}`;
}

/** Every line the stack's processes logged so far (gateway and functions). */
export async function stackLogs(): Promise<string> {
  const dir = `${need("EDGEWORKS_STATE_DIR")}/logs`;
  let all = "";
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.endsWith(".log") && !e.name.startsWith("fake")) {
      all += await Deno.readTextFile(`${dir}/${e.name}`);
    }
  }
  return all;
}

/** Connects `platform` for `user` through the whole OAuth flow. */
export async function connectPlatform(user: TestUser, platform: Platform): Promise<any> {
  const start = await callFunction("social-connect", { token: user.token, body: { action: "authorize", platform } });
  if (start.status !== 200) throw new Error(JSON.stringify(start.body));
  const r = await fetch(start.body.data.authorization_url, { redirect: "manual" });
  await r.body?.cancel();
  const to = new URL(r.headers.get("location")!);
  const done = await callFunction("social-connect", {
    token: user.token,
    body: { platform, code: to.searchParams.get("code"), state: to.searchParams.get("state") },
  });
  if (done.status !== 200) throw new Error(JSON.stringify(done.body));
  return done.body.data.connection;
}

/** PostgREST as a user (RLS applies). */
export async function rest(
  user: TestUser | null,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {
    apikey: stack.anonKey,
    "content-type": "application/json",
    prefer: "return=representation",
  };
  if (user) headers.authorization = `Bearer ${user.token}`;
  const r = await fetch(`${stack.url}/rest/v1/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let parsed: any = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // keep the text
  }
  return { status: r.status, body: parsed };
}

/** A pipeline of `steps` owned by `user`, made through the REST API as that user. */
export async function makePipeline(user: TestUser, steps: { step_type: string; config?: unknown }[]): Promise<string> {
  const p = await rest(user, "POST", "pipelines", { name: `e2e ${crypto.randomUUID().slice(0, 8)}` });
  if (p.status !== 201) throw new Error(`pipeline insert: ${p.status} ${JSON.stringify(p.body)}`);
  const id = p.body[0].id;
  const s = await rest(
    user,
    "POST",
    "pipeline_steps",
    steps.map((st, i) => ({ pipeline_id: id, position: i + 1, step_type: st.step_type, config: st.config ?? {} })),
  );
  if (s.status !== 201) throw new Error(`steps insert: ${s.status} ${JSON.stringify(s.body)}`);
  return id;
}

/** Runs due pipeline jobs (as the scheduler would) until `done` says so. */
export async function driveUntil<T>(what: string, done: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await done();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    const r = await callFunction("run-pipelines", {
      method: "GET",
      token: stack.serviceKey,
      query: "max_duration_ms=4000",
    });
    if (r.status !== 200) throw new Error(`run-pipelines: ${r.status} ${JSON.stringify(r.body)}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

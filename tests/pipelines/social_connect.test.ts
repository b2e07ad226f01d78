// social-connect end to end, against one fake OAuth server per platform.
import { assert, assertEquals } from "../support/assert.ts";
import { assertEnvelope, callFunction, createUser, type TestUser, withDb } from "../support/stack.ts";
import { fakeOAuth, type Platform, PLATFORMS, signState, stackLogs } from "./fakes.ts";

/** The platform's consent, as a browser would follow it: code and state from the redirect. */
async function consent(user: TestUser, platform: Platform): Promise<{ code: string; state: string }> {
  const start = await callFunction("social-connect", { token: user.token, body: { action: "authorize", platform } });
  assertEquals(start.status, 200, JSON.stringify(start.body));
  const url = new URL(start.body.data.authorization_url);
  const r = await fetch(url, { redirect: "manual" });
  assertEquals(r.status, 302, await r.text());
  const to = new URL(r.headers.get("location")!);
  assertEquals(to.origin + to.pathname, "https://app.example.test/oauth/callback");
  return { code: to.searchParams.get("code")!, state: to.searchParams.get("state")! };
}

async function connect(user: TestUser, platform: Platform) {
  const { code, state } = await consent(user, platform);
  return await callFunction("social-connect", { token: user.token, body: { platform, code, state } });
}

/** Whether text holds anything shaped like the fakes' tokens or the sealed form's plaintext. */
const holdsToken = (text: string) =>
  /\b(at|rt)-(instagram|twitter|linkedin|tiktok|google|facebook)-[0-9a-f]{8}/.test(text);

for (const platform of PLATFORMS) {
  Deno.test(`social-connect: ${platform} connects through its OAuth flow and stores only sealed tokens`, async () => {
    const user = await createUser();
    const r = await connect(user, platform);
    assertEquals(r.status, 200, JSON.stringify(r.body));
    const c = r.body.data.connection;
    assertEquals(c.platform, platform);
    assertEquals(c.status, "active");
    assert(typeof c.platform_user_id === "string" && c.platform_user_id.length > 0);
    assert(!holdsToken(JSON.stringify(r.body)), "a token leaked into the response");
    const rows = await withDb((sql) =>
      sql`select t.access_token, t.refresh_token from private.oauth_tokens t
            join public.oauth_connections c on c.id = t.connection_id
           where c.user_id = ${user.id} and c.platform = ${platform}`
    );
    assertEquals(rows.length, 1);
    assert(rows[0].access_token.startsWith("v1.k1."), "tokens are sealed at rest");
    assert(!holdsToken(`${rows[0].access_token} ${rows[0].refresh_token}`));
    const list = await callFunction("social-connect", { method: "GET", token: user.token });
    assertEquals(list.body.data.connections.map((x: any) => x.platform), [platform]);
    assert(!holdsToken(JSON.stringify(list.body)));
  });
}

Deno.test("social-connect: a tampered, replayed, expired or foreign state is refused", async () => {
  const user = await createUser();
  const { code, state } = await consent(user, "google");
  const [payload, sig] = state.split(".");
  const tampered = `${payload}.${sig.slice(0, -2)}${sig.endsWith("AA") ? "AB" : "AA"}`;
  let r = await callFunction("social-connect", {
    token: user.token,
    body: { platform: "google", code, state: tampered },
  });
  assertEquals(r.status, 400);
  assertEnvelope(r.body, "state_invalid");

  const other = await createUser();
  r = await callFunction("social-connect", { token: other.token, body: { platform: "google", code, state } });
  assertEnvelope(r.body, "state_mismatch");

  const expired = await signState({
    u: user.id,
    p: "google",
    n: crypto.randomUUID().replaceAll("-", ""),
    e: Math.floor(Date.now() / 1000) - 5,
  });
  r = await callFunction("social-connect", { token: user.token, body: { platform: "google", code, state: expired } });
  assertEquals(r.status, 400);
  assertEnvelope(r.body, "state_expired");

  r = await callFunction("social-connect", { token: user.token, body: { platform: "google", code, state } });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  r = await callFunction("social-connect", { token: user.token, body: { platform: "google", code, state } });
  assertEquals(r.status, 400);
  assertEnvelope(r.body, "state_replayed");
});

Deno.test("social-connect: ten concurrent refreshes of an expiring token call the token endpoint once", async () => {
  const fake = fakeOAuth("twitter");
  const user = await createUser();
  // Tokens that expire within the refresh margin (300 s), and a slow token endpoint.
  await fake.config({ expires_in: 60, refresh_delay_ms: 400 });
  try {
    assertEquals((await connect(user, "twitter")).status, 200);
    await fake.config({ refresh_delay_ms: 400 });
    const before = (await fake.requests()).length;
    const answers = await Promise.all(
      Array.from(
        { length: 10 },
        () => callFunction("social-connect", { token: user.token, body: { action: "refresh", platform: "twitter" } }),
      ),
    );
    for (const a of answers) assertEquals(a.status, 200, JSON.stringify(a.body));
    const refreshes = (await fake.requests()).slice(before)
      .filter((q) => q.path === "/2/oauth2/token" && q.form.grant_type === "refresh_token");
    assertEquals(refreshes.length, 1);
    assertEquals(answers.filter((a) => a.body.data.refreshed).length, 1);
    for (const a of answers) assert(!holdsToken(JSON.stringify(a.body)));
  } finally {
    await fake.config({});
  }
});

Deno.test("social-connect: a refresh refused for good marks the connection and notifies its owner", async () => {
  const fake = fakeOAuth("google");
  const user = await createUser();
  await fake.config({ expires_in: 30 });
  try {
    assertEquals((await connect(user, "google")).status, 200);
    await fake.config({ refresh_error: "invalid_grant" });
    const r = await callFunction("social-connect", {
      token: user.token,
      body: { action: "refresh", platform: "google" },
    });
    assertEquals(r.status, 409);
    assertEnvelope(r.body, "connection_needs_reconnect");
    const [conn] = await withDb((sql) => sql`select status from public.oauth_connections where user_id = ${user.id}`);
    assertEquals(conn.status, "refresh_failed");
    const notes = await withDb((sql) => sql`select kind from public.notifications where user_id = ${user.id}`);
    assertEquals(notes.map((n) => n.kind), ["oauth_refresh_failed"]);
  } finally {
    await fake.config({});
  }
});

Deno.test("social-connect: disconnect revokes at the platform and deletes the tokens", async () => {
  const fake = fakeOAuth("linkedin");
  const user = await createUser();
  assertEquals((await connect(user, "linkedin")).status, 200);
  const r = await callFunction("social-connect", {
    token: user.token,
    body: { action: "disconnect", platform: "linkedin" },
  });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  assertEquals(r.body.data.revoked_at_platform, true);
  assert((await fake.requests()).some((q) => q.path === "/oauth/v2/revoke"));
  const rows = await withDb((sql) => sql`select 1 from public.oauth_connections where user_id = ${user.id}`);
  assertEquals(rows.length, 0);
});

Deno.test("social-connect: bad input is a 4xx envelope; anonymous callers are refused", async () => {
  const user = await createUser();
  let r = await callFunction("social-connect", {
    token: user.token,
    body: { platform: "myspace", code: "x", state: "y" },
  });
  assertEquals(r.status, 422);
  assertEnvelope(r.body, "validation_failed");
  r = await callFunction("social-connect", {
    token: user.token,
    body: { platform: "twitter", code: "x\u0000", state: "y" },
  });
  assertEquals(r.status, 422);
  r = await callFunction("social-connect", { token: user.token, body: "{not json" });
  assertEquals(r.status, 400);
  r = await callFunction("social-connect", { token: null, body: { action: "authorize", platform: "twitter" } });
  assertEquals(r.status, 401);
});

Deno.test("social-connect: no platform token ever reaches the stack's logs", async () => {
  const logs = await stackLogs();
  assert(logs.length > 0);
  assert(!holdsToken(logs), "a platform token was logged");
  assert(!logs.includes("test-twitter-secret"), "a client secret was logged");
});

// The stack's one JWT module (scripts/local/jwt.ts): what it signs verifies,
// and each way a token can be wrong is refused with its own reason, which the
// local Realtime and Storage servers turn into their own messages.
import { assertEquals } from "../support/assert.ts";
import { apiKey, b64urlEncode, hs256Key, signJwt, userAccessToken, verifyJwt } from "../../scripts/local/jwt.ts";

const SECRET = "jwt-module-test-secret-at-least-32-bytes";
const NOW = 1_800_000_000;
const utf8 = new TextEncoder();
const part = (v: unknown) => b64urlEncode(utf8.encode(JSON.stringify(v)));
const claimsOf = (token: string) => JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));

Deno.test("a token the module signs verifies with the same secret and returns its claims", async () => {
  const token = await signJwt({ sub: "u1", role: "authenticated", exp: NOW + 60 }, SECRET);
  assertEquals(await verifyJwt(token, SECRET, NOW), {
    ok: true,
    claims: { sub: "u1", role: "authenticated", exp: NOW + 60 },
  });
});

Deno.test("another secret is a signature refusal; exp now or past is expired", async () => {
  const token = await signJwt({ role: "anon", exp: NOW }, SECRET);
  assertEquals(await verifyJwt(token, "another-secret-of-at-least-32-bytes!!", NOW - 1), {
    ok: false,
    reason: "signature",
  });
  assertEquals(await verifyJwt(token, SECRET, NOW), { ok: false, reason: "expired", exp: NOW });
});

Deno.test("alg none is refused as an algorithm, whatever its signature part", async () => {
  const token = `${part({ alg: "none", typ: "JWT" })}.${part({ role: "service_role", exp: NOW + 60 })}.`;
  assertEquals(await verifyJwt(token, SECRET, NOW), { ok: false, reason: "algorithm", alg: "none" });
});

Deno.test("a signed token without a finite exp is refused (1e400 parses to Infinity)", async () => {
  const head = part({ alg: "HS256", typ: "JWT" });
  // Signed by hand: signJwt cannot write 1e400 (JSON.stringify gives null).
  const key = await hs256Key(SECRET);
  for (const body of ['{"role":"anon"}', '{"role":"anon","exp":1e400}', '{"role":"anon","exp":"9999999999"}']) {
    const b = b64urlEncode(utf8.encode(body));
    const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, utf8.encode(`${head}.${b}`)));
    assertEquals(
      await verifyJwt(`${head}.${b}.${b64urlEncode(sig)}`, SECRET, NOW),
      { ok: false, reason: "no_exp" },
      body,
    );
  }
});

Deno.test("two parts, non-base64url characters or claims that are not an object are malformed", async () => {
  const head = part({ alg: "HS256", typ: "JWT" });
  for (
    const token of [
      `${head}.${part({ exp: NOW + 60 })}`,
      `${head}.${part({ exp: NOW + 60 })}.a+b/`,
      `${head}.${part([1])}.x`,
    ]
  ) {
    assertEquals(await verifyJwt(token, SECRET, NOW), { ok: false, reason: "malformed" }, token);
  }
});

Deno.test("API keys carry iss, role, iat and exp only; a user token carries what Supabase Auth's does", async () => {
  const anon = claimsOf(await apiKey("anon", SECRET, NOW));
  assertEquals(anon, { iss: "supabase-demo", role: "anon", iat: NOW, exp: NOW + 10 * 365 * 24 * 3600 });
  const user = claimsOf(
    await userAccessToken({
      secret: SECRET,
      apiUrl: "http://127.0.0.1:54321/",
      sub: "0123456789abcdef",
      expiresIn: 60,
    }),
  );
  assertEquals(
    [user.iss, user.sub, user.aud, user.role, user.email, user.exp - user.iat],
    ["http://127.0.0.1:54321/auth/v1", "0123456789abcdef", "authenticated", "authenticated", "01234567@test.local", 65],
  );
});

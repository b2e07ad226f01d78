// Mints the local stack's JWTs from its secret, as `supabase status` shows them.
// Usage: deno run scripts/local/keys.ts <secret> <api url>   -> JSON on stdout
// The keys carry what Supabase's carry (iss, role, iat, exp; no aud, no sub);
// the demo user's token what Supabase Auth issues, with iss = <api url>/auth/v1,
// which the functions check against their SUPABASE_URL.
const secret = Deno.args[0];
const apiUrl = (Deno.args[1] ?? "http://127.0.0.1:54321").replace(/\/+$/, "");
if (!secret) throw new Error("usage: keys.ts <secret> <api url>");

const enc = new TextEncoder();
const b64url = (b: Uint8Array) => btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);

async function sign(claims: Record<string, unknown>): Promise<string> {
  const head = b64url(enc.encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));
  const body = b64url(enc.encode(JSON.stringify(claims)));
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(`${head}.${body}`)));
  return `${head}.${body}.${b64url(sig)}`;
}

const now = Math.floor(Date.now() / 1000);
const tenYears = now + 10 * 365 * 24 * 3600;
console.log(JSON.stringify({
  anon: await sign({ iss: "supabase-demo", role: "anon", iat: now, exp: tenYears }),
  service_role: await sign({ iss: "supabase-demo", role: "service_role", iat: now, exp: tenYears }),
  demo_user: await sign({
    iss: `${apiUrl}/auth/v1`,
    sub: "00000000-0000-4000-8000-000000000001",
    aud: "authenticated",
    role: "authenticated",
    email: "demo@edgeworks.local",
    app_metadata: { provider: "email" },
    iat: now,
    exp: now + 24 * 3600,
  }),
}));

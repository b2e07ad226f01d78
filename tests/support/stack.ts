// What end-to-end tests know about the running stack (from scripts/serve's env file).
export function need(name: string): string {
  const v = Deno.env.get(name);
  if (!v) throw new Error(`${name} is not set: run the tests through scripts/test (or source .local/env)`);
  return v;
}

export const stack = {
  get url() {
    return need("SUPABASE_URL");
  },
  get anonKey() {
    return need("SUPABASE_ANON_KEY");
  },
  get serviceKey() {
    return need("SUPABASE_SERVICE_ROLE_KEY");
  },
  get jwtSecret() {
    return need("EDGEWORKS_JWT_SECRET");
  },
  get dbUrl() {
    return need("EDGEWORKS_DB_URL");
  },
  functionUrl(name: string): string {
    return `${need("SUPABASE_URL")}/functions/v1/${name}`;
  },
};

const enc = new TextEncoder();
const b64url = (b: Uint8Array) =>
  btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

/** Signs an HS256 JWT; `secret` defaults to the stack's. */
export async function signJwt(claims: Record<string, unknown>, secret = stack.jwtSecret): Promise<string> {
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const head = b64url(enc.encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));
  const body = b64url(enc.encode(JSON.stringify(claims)));
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(`${head}.${body}`)));
  return `${head}.${body}.${b64url(sig)}`;
}

/** A signed-in user's access token, as GoTrue would issue it. */
export async function userToken(
  userId: string = crypto.randomUUID(),
  opts: { expiresIn?: number; secret?: string; email?: string } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return await signJwt({
    sub: userId,
    aud: "authenticated",
    role: "authenticated",
    email: opts.email ?? `${userId.slice(0, 8)}@test.local`,
    iat: now - 5,
    exp: now + (opts.expiresIn ?? 3600),
  }, opts.secret);
}

export function assertEnvelope(body: any, code?: string) {
  if (body?.success !== false || typeof body?.error?.code !== "string" || typeof body?.error?.message !== "string") {
    throw new Error(`not an error envelope: ${JSON.stringify(body)}`);
  }
  if (code && body.error.code !== code) throw new Error(`expected code ${code}, got ${JSON.stringify(body.error)}`);
}

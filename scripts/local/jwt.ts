// HS256 JWTs with the stack's secret: the one place the local stack, the tests
// and the benches mint tokens (the keys `scripts/serve` prints, users' access
// tokens), and the check the local Realtime and Storage servers run on the
// tokens they are given. Verification is separate from signing and reports
// why a token failed, so each server answers in its own words. WebCrypto only.

const utf8 = new TextEncoder();

export type Claims = Record<string, unknown> & { role?: string; sub?: string; exp?: number };

export function b64urlEncode(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Null for anything that is not unpadded base64url. */
// `ReturnType<Uint8Array["slice"]>` is Uint8Array<ArrayBuffer> on current Deno and
// plain Uint8Array on the edge runtime's TypeScript, which has no generic form.
type Bytes = ReturnType<Uint8Array["slice"]>;

function b64urlDecode(s: string): Bytes | null {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) return null;
  try {
    const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

/** The HMAC-SHA-256 key for `secret`; import it once where many tokens are signed or checked. */
export function hs256Key(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", utf8.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
    "verify",
  ]);
}

const keyOf = (secret: string | CryptoKey | Promise<CryptoKey>) =>
  typeof secret === "string" ? hs256Key(secret) : Promise.resolve(secret);

/** `claims` signed with HS256 under `secret` (a string or a key from `hs256Key`). */
export async function signJwt(
  claims: Record<string, unknown>,
  secret: string | CryptoKey | Promise<CryptoKey>,
): Promise<string> {
  const head = b64urlEncode(utf8.encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));
  const body = b64urlEncode(utf8.encode(JSON.stringify(claims)));
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", await keyOf(secret), utf8.encode(`${head}.${body}`)));
  return `${head}.${body}.${b64urlEncode(sig)}`;
}

/**
 * Why a token was refused. `malformed`: not three base64url parts of JSON, or
 * claims that are not an object; `algorithm`: a header alg other than HS256
 * (`none` and the asymmetric ones are never trusted); `signature`: not signed
 * with this secret; `no_exp`: no finite numeric exp; `expired`: exp not in
 * the future. Checked in that order.
 */
export type JwtRefusal =
  | { reason: "malformed" }
  | { reason: "algorithm"; alg: unknown }
  | { reason: "signature" }
  | { reason: "no_exp" }
  | { reason: "expired"; exp: number };

export type JwtCheck = { ok: true; claims: Claims } | ({ ok: false } & JwtRefusal);

/** Checks an HS256 token against `secret` at `nowSecs`; never throws for a bad token. */
export async function verifyJwt(
  token: string,
  secret: string | CryptoKey | Promise<CryptoKey>,
  nowSecs = Date.now() / 1000,
): Promise<JwtCheck> {
  const parts = token.split(".");
  if (parts.length !== 3) return { ok: false, reason: "malformed" };
  const [head, body, sig] = parts.map(b64urlDecode);
  if (!head || !body || !sig) return { ok: false, reason: "malformed" };
  let header: { alg?: unknown }, claims: Claims;
  try {
    header = JSON.parse(new TextDecoder().decode(head));
    claims = JSON.parse(new TextDecoder().decode(body));
  } catch {
    return { ok: false, reason: "malformed" };
  }
  if (typeof claims !== "object" || claims === null || Array.isArray(claims)) return { ok: false, reason: "malformed" };
  if (header?.alg !== "HS256") return { ok: false, reason: "algorithm", alg: header?.alg };
  const ok = await crypto.subtle.verify("HMAC", await keyOf(secret), sig, utf8.encode(`${parts[0]}.${parts[1]}`));
  if (!ok) return { ok: false, reason: "signature" };
  if (typeof claims.exp !== "number" || !Number.isFinite(claims.exp)) return { ok: false, reason: "no_exp" };
  if (claims.exp <= nowSecs) return { ok: false, reason: "expired", exp: claims.exp };
  return { ok: true, claims };
}

// --- the tokens Supabase issues ---------------------------------------------

const TEN_YEARS_SECS = 10 * 365 * 24 * 3600;

/** An API key (anon or service_role) as Supabase issues them: iss, role, iat, exp; no aud, no sub. */
export async function apiKey(
  role: "anon" | "service_role",
  secret: string,
  nowSecs = Math.floor(Date.now() / 1000),
): Promise<string> {
  return await signJwt({ iss: "supabase-demo", role, iat: nowSecs, exp: nowSecs + TEN_YEARS_SECS }, secret);
}

export interface UserTokenInput {
  secret: string;
  /** The stack's API URL: Supabase Auth's iss is `<api url>/auth/v1`, which the functions check. */
  apiUrl: string;
  sub: string;
  email?: string;
  /** Seconds from now; negative for a token that has already expired. */
  expiresIn?: number;
  /** Claims added to (or replacing) the usual ones. */
  extra?: Record<string, unknown>;
}

/** A signed-in user's access token, as Supabase Auth issues it (iss, sub, aud, role, email, iat, exp). */
export async function userAccessToken(input: UserTokenInput): Promise<string> {
  // iat a little in the past, so a verifier whose clock lags ours still takes it.
  const now = Math.floor(Date.now() / 1000);
  return await signJwt({
    iss: `${input.apiUrl.replace(/\/+$/, "")}/auth/v1`,
    sub: input.sub,
    aud: "authenticated",
    role: "authenticated",
    email: input.email ?? `${input.sub.slice(0, 8)}@test.local`,
    iat: now - 5,
    exp: now + (input.expiresIn ?? 3600),
    ...input.extra,
  }, input.secret);
}

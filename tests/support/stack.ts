// What end-to-end tests know about the running stack (from scripts/serve's env file).
import postgres from "postgres";
import { signJwt as signJwtWith, userAccessToken } from "../../scripts/local/jwt.ts";

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

/** Signs an HS256 JWT; `secret` defaults to the stack's. */
export async function signJwt(claims: Record<string, unknown>, secret = stack.jwtSecret): Promise<string> {
  return await signJwtWith(claims, secret);
}

/** A signed-in user's access token, as Supabase Auth would issue it. */
export async function userToken(
  userId: string = crypto.randomUUID(),
  opts: { expiresIn?: number; secret?: string; email?: string } = {},
): Promise<string> {
  // iss is the same gateway URL the tests use, which the functions check against their SUPABASE_URL.
  return await userAccessToken({
    secret: opts.secret ?? stack.jwtSecret,
    apiUrl: stack.url,
    sub: userId,
    email: opts.email,
    expiresIn: opts.expiresIn,
  });
}

export function assertEnvelope(body: any, code?: string) {
  if (body?.success !== false || typeof body?.error?.code !== "string" || typeof body?.error?.message !== "string") {
    throw new Error(`not an error envelope: ${JSON.stringify(body)}`);
  }
  if (code && body.error.code !== code) throw new Error(`expected code ${code}, got ${JSON.stringify(body.error)}`);
}

export type Sql = ReturnType<typeof postgres>;

/** A pool on the stack's database as the postgres superuser; close it with `sql.end()`. */
export function connectDb(max = 4): Sql {
  return postgres(stack.dbUrl, { max, onnotice: () => {}, connection: { application_name: "edgeworks-e2e" } });
}

/** Runs `fn` with a fresh pool that is closed afterwards, so no test leaks a connection. */
export async function withDb<T>(fn: (sql: Sql) => Promise<T>, max = 4): Promise<T> {
  const sql = connectDb(max);
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export interface TestUser {
  id: string;
  email: string;
  /** An access token for this user, signed with the stack's secret. */
  token: string;
}

/**
 * A new row in auth.users (what GoTrue's sign-up writes, as far as the schema
 * needs: sessions and jobs reference auth.users) and a token for it.
 */
export async function createUser(sql?: Sql): Promise<TestUser> {
  const id = crypto.randomUUID();
  const email = `e2e-${id}@test.local`;
  const insert = (db: Sql) =>
    db`insert into auth.users (id, aud, role, email, raw_app_meta_data, email_confirmed_at)
       values (${id}, 'authenticated', 'authenticated', ${email}, '{"provider":"email"}', now())`;
  if (sql) await insert(sql);
  else await withDb(insert, 1);
  return { id, email, token: await userToken(id, { email }) };
}

export interface FunctionAnswer {
  status: number;
  headers: Headers;
  /** Parsed JSON, or the raw text when the body is not JSON. */
  body: any;
}

/** One raw HTTP call to a function through the gateway (for status codes and headers). */
export async function callFunction(
  name: string,
  opts: { method?: string; token?: string | null; body?: unknown; headers?: Record<string, string>; query?: string } =
    {},
): Promise<FunctionAnswer> {
  const headers: Record<string, string> = { apikey: stack.anonKey, ...(opts.headers ?? {}) };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body: BodyInit | undefined;
  if (opts.body !== undefined) {
    body = typeof opts.body === "string" || opts.body instanceof Uint8Array
      ? opts.body as BodyInit
      : JSON.stringify(opts.body);
    headers["content-type"] ??= "application/json";
  }
  const r = await fetch(stack.functionUrl(name) + (opts.query ? `?${opts.query}` : ""), {
    method: opts.method ?? "POST",
    headers,
    body,
  });
  const text = await r.text();
  let parsed: any = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: r.status, headers: r.headers, body: parsed };
}

/** Polls `check` every `everyMs` until it returns something other than undefined, for at most `timeoutMs`. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined>,
  { timeoutMs = 20_000, everyMs = 100 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // An exception from `check` ends the wait at once: it is a failure, not "not yet".
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

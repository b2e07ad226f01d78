// Writes the gateway's JSON config (stdout) from the environment scripts/serve
// prepared: EW_API_URL, EW_ANON_KEY, EW_SERVICE_KEY, EW_SECRET, EW_DENO,
// EW_FUNCTIONS_DB_URL, EW_S3_ENV (ew_s3_env's KEY=value lines, when storage
// runs), EW_FUNCTIONS_DOTENV (default supabase/functions/.env), EDGEWORKS_REST_PORT.
//
//   deno run --allow-env --allow-read scripts/local/gateway_config.ts > gateway.json
import { gatewayRules, loadStorage } from "./buckets.ts";

const root = decodeURIComponent(new URL("../../", import.meta.url).pathname).replace(/\/$/, "");
const fnRoot = `${root}/supabase/functions`;
const configToml = `${root}/supabase/config.toml`;

function need(name: string): string {
  const v = Deno.env.get(name);
  if (v === undefined) fail(`${name} is not set`);
  return v;
}

function fail(message: string): never {
  console.error(message);
  Deno.exit(1);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** KEY=value lines; a line without `=` is skipped. */
function keyValues(text: string): [string, string][] {
  return text.split("\n").filter((l) => l.includes("=")).map((l) => {
    const i = l.indexOf("=");
    return [l.slice(0, i), l.slice(i + 1)];
  });
}

const functions: string[] = [];
for await (const e of Deno.readDir(fnRoot)) {
  if (e.isDirectory && !e.name.startsWith("_") && await exists(`${fnRoot}/${e.name}/index.ts`)) functions.push(e.name);
}
functions.sort();

const api = need("EW_API_URL");
const anonKey = need("EW_ANON_KEY"), serviceKey = need("EW_SERVICE_KEY");
const env: Record<string, string> = {
  SUPABASE_URL: api,
  SUPABASE_ANON_KEY: anonKey,
  SUPABASE_SERVICE_ROLE_KEY: serviceKey,
  SUPABASE_JWT_SECRET: need("EW_SECRET"),
  SUPABASE_DB_URL: need("EW_FUNCTIONS_DB_URL"),
  // The hosted runtime's key maps, {"default": key}. The local gateway knows
  // no opaque sb_publishable_/sb_secret_ keys, so the JWT keys stand in.
  SUPABASE_PUBLISHABLE_KEYS: `{"default": ${JSON.stringify(anonKey)}}`,
  SUPABASE_SECRET_KEYS: `{"default": ${JSON.stringify(serviceKey)}}`,
  ENVIRONMENT: "development",
};
const s3Env = Object.fromEntries(keyValues(Deno.env.get("EW_S3_ENV") ?? ""));
// Functions reach storage through the gateway's /storage/v1/s3, as on Supabase;
// only the gateway talks to the S3 server directly.
for (const [k, v] of Object.entries(s3Env)) if (k !== "S3_DIRECT_ENDPOINT") env[k] = v;

// Like `supabase functions serve --env-file supabase/functions/.env`.
const dotenv = Deno.env.get("EW_FUNCTIONS_DOTENV") || `${fnRoot}/.env`;
if (await exists(dotenv)) {
  for (const raw of (await Deno.readTextFile(dotenv)).split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || !line.includes("=")) continue;
    const i = line.indexOf("=");
    const k = line.slice(0, i).trim();
    // Supabase reserves the prefix: `supabase secrets set` refuses such a
    // name, so a secret that works here could never be deployed.
    if (k.startsWith("SUPABASE_")) {
      fail(
        `${dotenv}: ${k}: secret names must not start with SUPABASE_ ` +
          "(the prefix is reserved for what the platform sets); rename it",
      );
    }
    env[k] = line.slice(i + 1).trim().replace(/^"+|"+$/g, "");
  }
}
const PASS = [
  "GEMINI_",
  "OPENAI_",
  "ANTHROPIC_",
  "MISTRAL_",
  "AI_",
  "RATE_LIMIT_",
  "CORS_",
  "MAX_BODY",
  "LOG_LEVEL",
  "EDGEWORKS_FN_",
  "QUEUE_",
  "CHAT_",
  "UPLOAD_",
  "MEDIA_",
];
for (const [k, v] of Object.entries(Deno.env.toObject())) {
  if (PASS.some((p) => k.startsWith(p))) env[k] = v;
}

const scheduleFile = `${root}/supabase/schedule.json`;
let cron = await exists(scheduleFile) ? JSON.parse(await Deno.readTextFile(scheduleFile)) : [];
if (Deno.env.get("EDGEWORKS_NO_CRON") === "1") cron = [];

console.log(JSON.stringify({
  port: Number(api.slice(api.lastIndexOf(":") + 1)),
  rest_url: "http://127.0.0.1:" + (Deno.env.get("EDGEWORKS_REST_PORT") ?? "54330"),
  // The gateway verifies S3 signatures with these keys and re-signs for the upstream.
  s3: s3Env.S3_DIRECT_ENDPOINT
    ? {
      upstream: s3Env.S3_DIRECT_ENDPOINT,
      region: s3Env.S3_REGION,
      access_key_id: s3Env.S3_ACCESS_KEY_ID,
      secret_access_key: s3Env.S3_SECRET_ACCESS_KEY,
      // The buckets' size and type rules, enforced on uploads as Supabase Storage does.
      ...gatewayRules(await loadStorage(configToml)),
    }
    : null,
  deno: need("EW_DENO"),
  functions_root: fnRoot,
  config_toml: configToml,
  functions: functions.map((n) => ({ name: n, entry: `${fnRoot}/${n}/index.ts` })),
  function_env: env,
  service_role_key: serviceKey,
  cron,
}));

// Storage buckets from supabase/config.toml, for the local stack.
//
//   buckets.ts create <config.toml>         create every [storage.buckets.<name>]
//                                           on the S3 endpoint (idempotent)
//   buckets.ts policy-json <config.toml>    print the STORAGE_BUCKETS JSON the
//                                           functions read (crates/storage policy)
//   buckets.ts names <config.toml>          print the bucket names, one a line
//   buckets.ts gateway-rules <config.toml>  print the rules the gateway's S3
//                                           endpoint enforces (sizes in bytes)
//   buckets.ts record-sql <config.toml>     print SQL that records every bucket in
//                                           storage.buckets (the Storage API's view)
//
// `create` reads S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY
// from the environment (never from argv, where `ps` would show the secret) and
// signs CreateBucket with the stack's SigV4 signer.
import { parse as parseToml } from "npm:smol-toml@1.3.1";
import { EMPTY_SHA256, signHeaders } from "./sigv4.ts";

export interface BucketSpec {
  public?: boolean;
  file_size_limit?: string | number;
  allowed_mime_types?: string[];
}

interface StorageConfig {
  storage: { file_size_limit?: string | number };
  buckets: Record<string, BucketSpec>;
}

class ConfigError extends Error {}

export async function loadStorage(path: string): Promise<StorageConfig> {
  const config = parseToml(await Deno.readTextFile(path)) as Record<string, any>;
  const storage = config.storage ?? {};
  const buckets = storage.buckets ?? {};
  if (typeof buckets !== "object" || Array.isArray(buckets)) {
    throw new ConfigError(`${path}: [storage.buckets] must be a table of tables`);
  }
  return { storage, buckets };
}

/** Keys sorted at every level, as the functions' JSON has always been written. */
function sortedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedKeys);
  if (typeof value !== "object" || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(value).sort()) out[k] = sortedKeys((value as Record<string, unknown>)[k]);
  return out;
}

/**
 * The subset the functions enforce; sizes pass through as written so there is
 * one size parser on their side (Rust's).
 */
export function policyJson({ storage, buckets }: StorageConfig): string {
  const out: Record<string, unknown> = { buckets: {} };
  if (storage.file_size_limit != null) out.file_size_limit = storage.file_size_limit;
  for (const [name, spec] of Object.entries(buckets)) {
    const b: Record<string, unknown> = { public: Boolean(spec.public ?? false) };
    if (spec.file_size_limit != null) b.file_size_limit = spec.file_size_limit;
    if (spec.allowed_mime_types?.length) b.allowed_mime_types = [...spec.allowed_mime_types];
    (out.buckets as Record<string, unknown>)[name] = b;
  }
  return JSON.stringify(sortedKeys(out));
}

const UNIT_SHIFT: Record<string, bigint> = { k: 10n, m: 20n, g: 30n, t: 40n, p: 50n };

/**
 * Bytes in "50MiB", "1.5 GB", "512k", "1024" or an integer: binary multiples,
 * as the Supabase CLI reads config.toml (and as crates/storage parse_size does
 * for the functions).
 */
export function parseSize(text: unknown): number {
  if (typeof text === "number" && Number.isSafeInteger(text)) return text;
  if (typeof text !== "string") throw new ConfigError(`${JSON.stringify(text)} is not a size`);
  const s = text.trim();
  const m = /^([0-9.]*)(.*)$/s.exec(s)!;
  const num = m[1];
  let unit = m[2];
  const bad = () => new ConfigError(`${JSON.stringify(text)} is not a size like "50MiB"`);
  if (!num || num.startsWith(".") || num.endsWith(".") || num.split(".").length > 2) throw bad();
  unit = (unit.startsWith(" ") ? unit.slice(1) : unit).toLowerCase();
  const shift = UNIT_SHIFT[unit.slice(0, 1)] ?? 0n;
  const rest = shift ? unit.slice(1) : unit;
  if (!["", "i", "b", "ib"].includes(rest)) throw bad();
  const [whole, frac = ""] = num.split(".");
  const multiplier = 1n << shift;
  // BigInt: a fraction's digits times a multiplier of up to 2^50 is past 2^53.
  const digits = frac.slice(0, 18);
  const fracBytes = digits ? (BigInt(digits) * multiplier) / 10n ** BigInt(digits.length) : 0n;
  return Number(BigInt(whole) * multiplier + fracBytes);
}

const mimeList = (spec: BucketSpec) => (spec.allowed_mime_types ?? []).map((t) => t.trim().toLowerCase());

/**
 * What the gateway's /storage/v1/s3 enforces: per bucket the effective size
 * limit (the smaller of the bucket's and [storage]'s) and the allowed types;
 * buckets config.toml does not list get [storage]'s limit only.
 */
export function gatewayRules({ storage, buckets }: StorageConfig) {
  const fallback = storage.file_size_limit != null ? parseSize(storage.file_size_limit) : null;
  const out: {
    buckets: Record<string, { file_size_limit: number | null; allowed_mime_types: string[] }>;
    default_file_size_limit: number | null;
  } = { buckets: {}, default_file_size_limit: fallback };
  for (const [name, spec] of Object.entries(buckets)) {
    const own = spec.file_size_limit != null ? parseSize(spec.file_size_limit) : null;
    const limits = [own, fallback].filter((x): x is number => x !== null);
    out.buckets[name] = {
      file_size_limit: limits.length ? Math.min(...limits) : null,
      allowed_mime_types: mimeList(spec),
    };
  }
  return out;
}

const sqlText = (value: string) => "'" + value.replaceAll("'", "''") + "'";

/**
 * Upserts into storage.buckets: config.toml stays the truth for the buckets it
 * declares (public, own size limit in bytes, allowed types), as
 * `supabase seed buckets` makes it on a hosted project.
 */
export function recordSql({ buckets }: StorageConfig): string {
  return Object.entries(buckets).map(([name, spec]) => {
    const limit = spec.file_size_limit != null ? String(parseSize(spec.file_size_limit)) : "null";
    const types = mimeList(spec);
    const mimes = types.length ? "array[" + types.map(sqlText).join(", ") + "]::text[]" : "null";
    const isPublic = spec.public ? "true" : "false";
    return "insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types) " +
      `values (${sqlText(name)}, ${sqlText(name)}, ${isPublic}, ${limit}, ${mimes}) ` +
      "on conflict (id) do update set public = excluded.public, file_size_limit = excluded.file_size_limit, " +
      "allowed_mime_types = excluded.allowed_mime_types, updated_at = now();";
  }).join("\n");
}

/** PUT /<bucket> on the S3 server for each bucket; one that exists already is fine. */
async function create({ buckets }: StorageConfig): Promise<void> {
  const env: Record<string, string> = {};
  for (const name of ["S3_ENDPOINT", "S3_REGION", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"]) {
    env[name] = Deno.env.get(name) ?? "";
    if (!env[name]) throw new ConfigError(`${name} is not set`);
  }
  const endpoint = env.S3_ENDPOINT.replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]/.test(endpoint)) throw new ConfigError("S3_ENDPOINT must be an http(s) URL");
  const credentials = { accessKeyId: env.S3_ACCESS_KEY_ID, secretAccessKey: env.S3_SECRET_ACCESS_KEY };
  for (const bucket of Object.keys(buckets)) {
    const url = `${endpoint}/${encodeURIComponent(bucket)}`;
    const headers = new Headers();
    await signHeaders({ method: "PUT", url, headers, payloadHash: EMPTY_SHA256, credentials, region: env.S3_REGION });
    let resp: Response;
    try {
      resp = await fetch(url, { method: "PUT", headers, body: new Uint8Array(), signal: AbortSignal.timeout(10_000) });
    } catch (e) {
      throw new ConfigError(`bucket ${bucket}: S3 endpoint unreachable: ${(e as Error).message}`);
    }
    const body = await resp.text();
    if (resp.ok) {
      console.error(`bucket ${bucket}: created (${resp.status})`);
    } else if (resp.status === 409 && /BucketAlreadyOwnedByYou|BucketAlreadyExists/.test(body)) {
      console.error(`bucket ${bucket}: exists`);
    } else {
      const code = /<Code>(.*?)<\/Code>/.exec(body)?.[1] ?? "";
      throw new ConfigError(`bucket ${bucket}: CreateBucket failed with HTTP ${resp.status} ${code}`);
    }
  }
}

if (import.meta.main) {
  const [cmd, path] = Deno.args;
  const commands = ["create", "policy-json", "names", "gateway-rules", "record-sql"];
  if (Deno.args.length !== 2 || !commands.includes(cmd)) {
    console.error(`usage: buckets.ts {${commands.join("|")}} <config.toml>`);
    Deno.exit(2);
  }
  try {
    const config = await loadStorage(path);
    if (cmd === "create") await create(config);
    else if (cmd === "policy-json") console.log(policyJson(config));
    else if (cmd === "record-sql") console.log(recordSql(config));
    else if (cmd === "gateway-rules") console.log(JSON.stringify(sortedKeys(gatewayRules(config))));
    else for (const name of Object.keys(config.buckets)) console.log(name);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(e.message);
    Deno.exit(1);
  }
}

// Standard Webhooks signing for tests, fakes and benches: the one place the
// TypeScript side signs a delivery (the functions verify in Rust, crates/auth).
//   webhook-signature: "v1," + base64(HMAC-SHA256(secret, "<id>.<timestamp>.<body>"))
// A `whsec_` secret is base64 after its prefix; any other secret is used as its
// UTF-8 bytes.

const enc = new TextEncoder();

// Uint8Array<ArrayBuffer> where TypeScript has the generic form (current Deno),
// plain Uint8Array on the edge runtime's older TypeScript.
type Bytes = ReturnType<Uint8Array["slice"]>;

function secretBytes(secret: string): Bytes {
  return secret.startsWith("whsec_")
    ? Uint8Array.from(atob(secret.slice("whsec_".length)), (c) => c.charCodeAt(0))
    : enc.encode(secret);
}

/** The `webhook-signature` value of one delivery. */
export async function webhookSignature(secret: string, id: string, timestamp: number | string, body: string) {
  const key = await crypto.subtle.importKey("raw", secretBytes(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(`${id}.${timestamp}.${body}`)));
  return `v1,${btoa(String.fromCharCode(...sig))}`;
}

/** The three Standard Webhooks headers for `body`; id and timestamp default to fresh ones. */
export async function webhookHeaders(
  secret: string,
  body: string,
  opts: { id?: string; timestamp?: number } = {},
): Promise<Record<string, string>> {
  const id = opts.id ?? `msg_${crypto.randomUUID()}`;
  const timestamp = String(opts.timestamp ?? Math.floor(Date.now() / 1000));
  return {
    "webhook-id": id,
    "webhook-timestamp": timestamp,
    "webhook-signature": await webhookSignature(secret, id, timestamp, body),
  };
}

// Whether a failed proxied fetch failed on the client's side: the request
// body the gateway was passing on could not be read (a body shorter than its
// Content-Length ends that way when the client closes, and so does a
// connection cut mid-upload). Such a failure is the client's, answered 400;
// anything else is the upstream's, answered 502/503.
//
// The body is handed to fetch as the server's own stream, not wrapped: Deno
// keeps a declared Content-Length only for that stream (a JavaScript stream
// goes out chunked, which s3s-fs refuses with 411), so the cause is read from
// the error fetch gives. Pinned by tests/platform/security/gateway.test.ts and
// tests/platform/security/s3_limits.test.ts on the stack's Deno version.

export function clientBodyFailed(e: unknown): boolean {
  for (let cur: unknown = e, depth = 0; cur instanceof Error && depth < 5; cur = cur.cause, depth++) {
    if (/request body|BadResource|body.*unavailable/i.test(`${cur.name}: ${cur.message}`)) return true;
  }
  return false;
}

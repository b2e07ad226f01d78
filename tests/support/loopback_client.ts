// HTTP from a chosen loopback source address. Linux routes all of 127.0.0.0/8
// to lo, so a test can be a genuinely different client of the local gateway
// (which keys anonymous rate limits on its socket peer) without a second
// machine; Deno.connect cannot pick its source address, node:http can.
import http from "node:http";

/** A random 127.x.y.z other than 127.0.0.1, so no other test shares its buckets. */
export function randomLoopback(): string {
  const b = crypto.getRandomValues(new Uint8Array(3));
  return `127.${b[0]}.${b[1]}.${Math.max(2, b[2] % 254)}`;
}

export interface LoopbackAnswer {
  status: number;
  headers: Headers;
  text: string;
}

/** One request to `url` from `localAddress`, on its own connection. */
export function requestFrom(
  localAddress: string,
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<LoopbackAnswer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname,
      port: Number(u.port),
      path: u.pathname + u.search,
      method: opts.method ?? "GET",
      headers: opts.headers ?? {},
      localAddress,
      agent: false,
    }, (res) => {
      const chunks: Uint8Array[] = [];
      res.on("data", (c: Uint8Array) => chunks.push(c));
      res.on("end", () => {
        const headers = new Headers();
        for (const [k, v] of Object.entries(res.headers)) {
          if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(", ") : String(v));
        }
        const text = new TextDecoder().decode(
          chunks.reduce((a, c) => {
            const out = new Uint8Array(a.length + c.length);
            out.set(a);
            out.set(c, a.length);
            return out;
          }, new Uint8Array()),
        );
        resolve({ status: res.statusCode ?? 0, headers, text });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(opts.body);
  });
}

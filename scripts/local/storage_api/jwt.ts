// HS256 tokens with the stack's JWT secret: verifying callers' access tokens
// (what Supabase Storage does with the project's secret) and minting the
// tokens inside signed download and upload URLs (Storage signs those with the
// same secret). WebCrypto only.

import { StorageFailure } from "./errors.ts";

const utf8 = new TextEncoder();

function b64urlEncode(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function b64urlDecode(s: string): Uint8Array<ArrayBuffer> | null {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) return null;
  try {
    const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

export type Claims = Record<string, unknown> & { role?: string; sub?: string; exp?: number };

export class Hs256 {
  #key: Promise<CryptoKey>;
  constructor(secret: string) {
    this.#key = crypto.subtle.importKey("raw", utf8.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]);
  }

  async sign(claims: Claims): Promise<string> {
    const head = b64urlEncode(utf8.encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));
    const body = b64urlEncode(utf8.encode(JSON.stringify(claims)));
    const sig = new Uint8Array(await crypto.subtle.sign("HMAC", await this.#key, utf8.encode(`${head}.${body}`)));
    return `${head}.${body}.${b64urlEncode(sig)}`;
  }

  /**
   * The claims of a token signed with our secret whose `exp` is in the future;
   * otherwise a StorageFailure built by `fail` (callers differ in status and code).
   */
  async verify(
    token: string,
    fail: (reason: "malformed" | "signature" | "expired") => StorageFailure,
    nowSecs = Date.now() / 1000,
  ): Promise<Claims> {
    const parts = token.split(".");
    if (parts.length !== 3) throw fail("malformed");
    const [head, body, sig] = parts.map(b64urlDecode);
    if (!head || !body || !sig) throw fail("malformed");
    let header: { alg?: unknown }, claims: Claims;
    try {
      header = JSON.parse(new TextDecoder().decode(head));
      claims = JSON.parse(new TextDecoder().decode(body));
    } catch {
      throw fail("malformed");
    }
    // Only HS256: `none` and the asymmetric algorithms are refused, never trusted.
    if (header?.alg !== "HS256" || typeof claims !== "object" || claims === null) throw fail("malformed");
    const ok = await crypto.subtle.verify(
      "HMAC",
      await this.#key,
      sig,
      utf8.encode(`${parts[0]}.${parts[1]}`),
    );
    if (!ok) throw fail("signature");
    if (typeof claims.exp !== "number" || !Number.isFinite(claims.exp)) throw fail("malformed");
    if (claims.exp <= nowSecs) throw fail("expired");
    return claims;
  }
}

// HS256 tokens with the stack's JWT secret: verifying callers' access tokens
// (what Supabase Storage does with the project's secret) and minting the
// tokens inside signed download and upload URLs (Storage signs those with the
// same secret). The token work is the stack's one JWT module; this names the
// refusals the way Storage does.

import { type Claims, hs256Key, signJwt, verifyJwt } from "../jwt.ts";
import type { StorageFailure } from "./errors.ts";

export type { Claims };

export class Hs256 {
  #key: Promise<CryptoKey>;
  constructor(secret: string) {
    this.#key = hs256Key(secret);
  }

  async sign(claims: Claims): Promise<string> {
    return await signJwt(claims, this.#key);
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
    const check = await verifyJwt(token, this.#key, nowSecs);
    if (check.ok) return check.claims;
    // Storage calls a token with another algorithm, or without exp, malformed.
    throw fail(check.reason === "signature" || check.reason === "expired" ? check.reason : "malformed");
  }
}

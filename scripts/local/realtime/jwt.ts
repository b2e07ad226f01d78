// Verification of the tokens Realtime is given (the apikey on connect, the
// access_token on join and refresh), with the stack's JWT secret, as Supabase
// Realtime verifies them with the project's secret. The token work is the
// stack's one JWT module; this adds the role rule and Realtime's messages.

import { type Claims, hs256Key, verifyJwt } from "../jwt.ts";

export type { Claims };

/** The roles a channel can act as; any other role claim is refused. */
export const API_ROLES = new Set(["anon", "authenticated", "service_role"]);

export class TokenError extends Error {}

export function verifier(secret: string): (token: string, nowSecs?: number) => Promise<Claims> {
  const key = hs256Key(secret);
  return async (token: string, nowSecs = Date.now() / 1000): Promise<Claims> => {
    const check = await verifyJwt(token, key, nowSecs);
    if (!check.ok) {
      switch (check.reason) {
        case "malformed":
          throw new TokenError("Invalid token");
        case "algorithm":
          throw new TokenError(`Token signing algorithm ${check.alg} is not supported`);
        case "signature":
          throw new TokenError("Signature does not match");
        case "no_exp":
          throw new TokenError("Token has no exp claim");
        case "expired":
          throw new TokenError(`Token has expired ${Math.floor(nowSecs - check.exp)} seconds ago`);
      }
    }
    if (!API_ROLES.has(check.claims.role as string)) {
      throw new TokenError(`Token role ${JSON.stringify(check.claims.role)} is not allowed`);
    }
    return check.claims;
  };
}

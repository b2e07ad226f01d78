// HS256 verification of the tokens Realtime is given (the apikey on connect,
// the access_token on join and refresh), with the stack's JWT secret, as
// Supabase Realtime verifies them with the project's secret.

export type Claims = Record<string, unknown> & { role?: string; sub?: string; exp?: number };

/** The roles a channel can act as; any other role claim is refused. */
export const API_ROLES = new Set(["anon", "authenticated", "service_role"]);

const enc = new TextEncoder();

function b64urlDecode(s: string): Uint8Array<ArrayBuffer> {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

export class TokenError extends Error {}

export function verifier(secret: string): (token: string, nowSecs?: number) => Promise<Claims> {
  const key = crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "verify",
  ]);
  return async (token: string, nowSecs = Date.now() / 1000): Promise<Claims> => {
    const parts = token.split(".");
    if (parts.length !== 3) throw new TokenError("Invalid token");
    let header: any, claims: any;
    try {
      header = JSON.parse(new TextDecoder().decode(b64urlDecode(parts[0])));
      claims = JSON.parse(new TextDecoder().decode(b64urlDecode(parts[1])));
    } catch {
      throw new TokenError("Invalid token");
    }
    if (header?.alg !== "HS256") throw new TokenError(`Token signing algorithm ${header?.alg} is not supported`);
    const ok = await crypto.subtle.verify(
      "HMAC",
      await key,
      b64urlDecode(parts[2]),
      enc.encode(`${parts[0]}.${parts[1]}`),
    ).catch(() => false);
    if (!ok) throw new TokenError("Signature does not match");
    if (typeof claims !== "object" || claims === null) throw new TokenError("Invalid token");
    if (typeof claims.exp !== "number") throw new TokenError("Token has no exp claim");
    if (claims.exp <= nowSecs) {
      throw new TokenError(`Token has expired ${Math.floor(nowSecs - claims.exp)} seconds ago`);
    }
    if (!API_ROLES.has(claims.role)) throw new TokenError(`Token role ${JSON.stringify(claims.role)} is not allowed`);
    return claims as Claims;
  };
}

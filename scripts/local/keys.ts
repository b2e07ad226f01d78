// Mints the local stack's JWTs from its secret, as `supabase status` shows them.
// Usage: EW_SECRET=<secret> deno run --allow-env=EW_SECRET scripts/local/keys.ts <api url>
// (the secret in the environment, not argv, where `ps` would show it).
// Prints three lines, anon key, service_role key, demo user's access token, so
// that scripts/serve reads them with `read` and parses nothing itself.
// The keys carry what Supabase's carry (iss, role, iat, exp; no aud, no sub);
// the demo user's token what Supabase Auth issues, with iss = <api url>/auth/v1,
// which the functions check against their SUPABASE_URL.
import { apiKey, userAccessToken } from "./jwt.ts";

const secret = Deno.env.get("EW_SECRET");
const apiUrl = Deno.args[0] ?? "http://127.0.0.1:54321";
if (!secret) throw new Error("usage: EW_SECRET=<secret> keys.ts <api url>");

console.log(await apiKey("anon", secret));
console.log(await apiKey("service_role", secret));
console.log(
  await userAccessToken({
    secret,
    apiUrl,
    sub: "00000000-0000-4000-8000-000000000001",
    email: "demo@edgeworks.local",
    expiresIn: 24 * 3600,
    extra: { app_metadata: { provider: "email" } },
  }),
);

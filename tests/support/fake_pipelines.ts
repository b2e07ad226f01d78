// Starts the content pipelines' fakes for an end-to-end run: one OAuth
// server per platform (fake_oauth.ts) and Replicate (fake_replicate.ts), and
// writes the settings that point the functions at them, as KEY=value lines,
// to the file named by the first argument (scripts/test hands that file to
// the stack as its functions' env file, EW_FUNCTIONS_DOTENV, and exports it
// to the tests). Runs until killed.
//
//   deno run --allow-net --allow-read --allow-write tests/support/fake_pipelines.ts <env file>
import { PLATFORMS, startFakeOAuth } from "./fake_oauth.ts";
import { startFakeReplicate } from "./fake_replicate.ts";

const out = Deno.args[0];
if (!out) {
  console.error("usage: fake_pipelines.ts <env file>");
  Deno.exit(2);
}
const rand = (n: number) => {
  const b = crypto.getRandomValues(new Uint8Array(n));
  return btoa(String.fromCharCode(...b));
};
const hex = () => crypto.randomUUID().replaceAll("-", "");

const lines: string[] = [];
for (const p of PLATFORMS) {
  const up = p.toUpperCase();
  const fake = startFakeOAuth(p, `test-${p}-client`, `test-${p}-secret-${hex()}`);
  lines.push(
    `OAUTH_${up}_BASE_URL=${fake.url}`,
    `OAUTH_${up}_CLIENT_ID=${fake.clientId}`,
    `OAUTH_${up}_CLIENT_SECRET=${fake.clientSecret}`,
  );
}
const replicate = startFakeReplicate(`r8_test_${hex()}`, `whsec_${rand(24)}`);
lines.push(
  "OAUTH_REDIRECT_URI=https://app.example.test/oauth/callback",
  `OAUTH_STATE_SECRET=state-${hex()}${hex()}`,
  `OAUTH_TOKEN_KEYS=k1:${rand(32)}`,
  `REPLICATE_BASE_URL=${replicate.url}`,
  `REPLICATE_API_TOKEN=${replicate.token}`,
  `REPLICATE_WEBHOOK_SECRET=${replicate.webhookSecret}`,
  `REPLICATE_DELIVERY_HOSTS=${new URL(replicate.url).host}`,
  // The fallback poll waits long enough that webhooks decide the tests.
  "REPLICATE_POLL_DELAY_MS=600000",
  "PIPELINES_RETRY_BASE_MS=200",
);
await Deno.writeTextFile(`${out}.tmp`, lines.join("\n") + "\n");
await Deno.rename(`${out}.tmp`, out);
console.log(`fakes listening; settings in ${out}`);

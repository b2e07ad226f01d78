// The env the local stack gives functions (scripts/local/gateway_config.ts),
// as the Supabase CLI and platform give it.
import { assert, assertEquals } from "../../support/assert.ts";

const script = new URL("../../../scripts/local/gateway_config.ts", import.meta.url).pathname;

async function gatewayConfig(dotenv: string) {
  const file = await Deno.makeTempFile({ suffix: ".env" });
  try {
    await Deno.writeTextFile(file, dotenv);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--no-prompt", "--allow-env", "--allow-read", script],
      env: {
        EW_API_URL: "http://127.0.0.1:54321",
        EW_ANON_KEY: "anon-key",
        EW_SERVICE_KEY: "service-key",
        EW_SECRET: "jwt-secret",
        EW_DENO: "deno",
        EW_FUNCTIONS_DB_URL: "postgresql://postgres:postgres@127.0.0.1:54322/postgres",
        EW_FUNCTIONS_DOTENV: file,
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  } finally {
    await Deno.remove(file);
  }
}

Deno.test('functions get SUPABASE_DB_URL and the key maps as {"default": key}', async () => {
  const out = await gatewayConfig("MY_SECRET=value\n");
  assertEquals(out.code, 0, out.stderr);
  const env = JSON.parse(out.stdout).function_env;
  assertEquals(env.SUPABASE_DB_URL, "postgresql://postgres:postgres@127.0.0.1:54322/postgres");
  assertEquals(JSON.parse(env.SUPABASE_PUBLISHABLE_KEYS), { default: "anon-key" });
  assertEquals(JSON.parse(env.SUPABASE_SECRET_KEYS), { default: "service-key" });
  assertEquals(env.MY_SECRET, "value");
});

Deno.test("a secret named SUPABASE_* in supabase/functions/.env stops the stack with a message naming it", async () => {
  const out = await gatewayConfig("OK_ONE=1\nSUPABASE_URL=http://elsewhere\n");
  assert(out.code !== 0, "refused");
  assert(out.stderr.includes("SUPABASE_URL") && out.stderr.includes("must not start with SUPABASE_"), out.stderr);
  assertEquals(out.stdout, "");
});

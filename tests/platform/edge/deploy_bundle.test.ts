// What `supabase functions deploy` bundles from each entrypoint must load and
// type-check on the hosted runtime's Deno (2.1): the bundler runs that Deno
// over the entrypoint and picks up the nearest deno.json and its lockfile.
// The repository's root deno.lock is version 5, which Deno 2.1 refuses to
// read, so the functions have a deno.json of their own with no lockfile
// (supabase/functions/deno.json, `"lock": false`; they import nothing from npm).
import { assert, assertEquals } from "../../support/assert.ts";
import { nearestDenoConfig, readFunctionSpecs } from "../../../scripts/local/functions_host.ts";
import { edgeDeno } from "./_host.ts";

const supabaseDir = new URL("../../../supabase/", import.meta.url).pathname;
const specs = await readFunctionSpecs(`${supabaseDir}config.toml`, `${supabaseDir}functions`);

/** The nearest deno.lock walking up from `dir`, stopping at the config's folder. */
function lockBeside(configPath: string): string | null {
  const lock = configPath.replace(/deno\.jsonc?$/, "deno.lock");
  try {
    return Deno.statSync(lock).isFile ? lock : null;
  } catch {
    return null;
  }
}

Deno.test("every function is found with its entrypoint", () => {
  assert(specs.length >= 5, `found ${specs.map((s) => s.name)}`);
});

for (const spec of specs) {
  Deno.test(`${spec.name}: the bundler finds supabase/functions/deno.json, which keeps no lockfile`, async () => {
    assertEquals(spec.config, `${supabaseDir}functions/deno.json`);
    assertEquals(nearestDenoConfig(spec.dir), spec.config);
    const config = JSON.parse(await Deno.readTextFile(spec.config!));
    assertEquals(config.lock, false);
    const lock = lockBeside(spec.config!);
    if (lock) {
      const version = JSON.parse(await Deno.readTextFile(lock)).version;
      assert(Number(version) <= 4, `${lock} is version ${version}; Deno 2.1 reads at most 4`);
    }
  });

  Deno.test(`${spec.name}: its static_files include the wasm it loads`, () => {
    assert(spec.staticFiles.some((f) => f.endsWith("_bg.wasm")), `static files: ${spec.staticFiles.join(", ")}`);
  });

  Deno.test(`${spec.name}: type-checks on the edge runtime's Deno with the config the bundler finds, offline`, async () => {
    const out = await new Deno.Command(edgeDeno(), {
      args: ["check", "--quiet", "--no-remote", "--config", spec.config!, spec.entry],
      cwd: spec.dir,
      // An unreachable registry: anything not already in the local cache fails the check.
      env: { NPM_CONFIG_REGISTRY: "http://127.0.0.1:9/", DENO_NO_UPDATE_CHECK: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, err);
  });
}

// One definition of a function. A function lives in three places that must
// agree: its crate (functions/<name>, wiring a system's handler), its shim
// (supabase/functions/<name>/index.ts) and its [functions.<name>] block in
// supabase/config.toml (verify_jwt = false: Rust verifies tokens; the wasm
// listed in static_files). `check` finds every disagreement; `create` writes
// all three (and a test) for a new function so they start out agreeing.
//
//   deno run --allow-read scripts/lib/functions.ts check [root]
//   deno run --allow-read --allow-write scripts/lib/functions.ts create <system> <name> [root]
import { parse as parseToml } from "npm:smol-toml@1.3.1";

const NAME = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

async function dirs(path: string, keep: (name: string) => Promise<boolean>): Promise<Set<string>> {
  const out = new Set<string>();
  try {
    for await (const e of Deno.readDir(path)) {
      if (e.isDirectory && !e.name.startsWith("_") && await keep(e.name)) out.add(e.name);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

const lib = (name: string) => name.replaceAll("-", "_");

/** Every way the three definitions disagree, as sentences; empty when they agree. */
export async function check(root: string): Promise<string[]> {
  const problems: string[] = [];
  const crates = await dirs(`${root}/functions`, (n) => exists(`${root}/functions/${n}/Cargo.toml`));
  const shims = await dirs(`${root}/supabase/functions`, (n) => exists(`${root}/supabase/functions/${n}/index.ts`));
  const config = parseToml(await Deno.readTextFile(`${root}/supabase/config.toml`)) as {
    functions?: Record<string, { verify_jwt?: boolean; entrypoint?: string; static_files?: string[] }>;
  };
  const blocks = config.functions ?? {};
  const all = new Set([...crates, ...shims, ...Object.keys(blocks)]);
  for (const name of [...all].sort()) {
    if (!crates.has(name)) problems.push(`${name}: no crate functions/${name}/Cargo.toml`);
    if (!shims.has(name)) problems.push(`${name}: no shim supabase/functions/${name}/index.ts`);
    const block = blocks[name];
    if (!block) {
      problems.push(`${name}: no [functions.${name}] in supabase/config.toml`);
    } else {
      if (block.verify_jwt !== false) {
        problems.push(`${name}: config.toml must set verify_jwt = false (Rust verifies tokens)`);
      }
      if (block.entrypoint !== undefined && block.entrypoint !== `./functions/${name}/index.ts`) {
        problems.push(`${name}: config.toml entrypoint is ${block.entrypoint}, not ./functions/${name}/index.ts`);
      }
      if (!(block.static_files ?? []).includes(`./functions/${name}/pkg/*`)) {
        problems.push(`${name}: config.toml static_files must list ./functions/${name}/pkg/* (the wasm)`);
      }
    }
    if (crates.has(name)) {
      const cargo = await Deno.readTextFile(`${root}/functions/${name}/Cargo.toml`);
      if (!cargo.includes(`name = "${name}"`)) {
        problems.push(`${name}: functions/${name}/Cargo.toml names another package`);
      }
    }
    if (shims.has(name)) {
      const shim = await Deno.readTextFile(`${root}/supabase/functions/${name}/index.ts`);
      if (!shim.includes(`serveWasm("${name}"`) || !shim.includes(`./pkg/${lib(name)}_bg.wasm`)) {
        problems.push(`${name}: the shim must serveWasm("${name}", ...) its own ./pkg/${lib(name)}_bg.wasm`);
      }
    }
  }
  return problems;
}

/** Writes the crate, shim, config block and test of a new function of `system`. */
export async function create(root: string, system: string, name: string): Promise<string[]> {
  if (!NAME.test(name)) throw new Error(`${name}: use lower-case words joined by '-'`);
  if (!NAME.test(system)) throw new Error(`${system}: use lower-case words joined by '-'`);
  const systemDir = `${root}/systems/${system}`;
  if (!await exists(`${systemDir}/Cargo.toml`)) throw new Error(`no system crate systems/${system}/Cargo.toml`);
  for (const p of [`functions/${name}`, `supabase/functions/${name}`]) {
    if (await exists(`${root}/${p}`)) throw new Error(`${p} exists already`);
  }
  const systemCrate = `edgeworks-${system}`;
  const module = lib(name);
  const written: string[] = [];
  const write = async (path: string, text: string, append = false) => {
    await Deno.mkdir(`${root}/${path}`.replace(/\/[^/]*$/, ""), { recursive: true });
    await Deno.writeTextFile(`${root}/${path}`, text, { append });
    written.push(path);
  };

  // The handler and its route live in the system crate; the function crate wires them.
  const systemLib = `${systemDir}/src/lib.rs`;
  if (!await exists(`${systemDir}/src/${module}.rs`)) {
    await write(
      `systems/${system}/src/${module}.rs`,
      `//! ${name}: TODO say what it does, for whom.

use edgeworks_core::{ApiError, Method};
use edgeworks_service::{Json, Route, User};
use serde_json::{json, Value};

/// POST, signed-in users, 30 burst / one every 2 s (\`RATE_LIMIT_${module.toUpperCase()}\` overrides).
pub const ROUTE: Route = Route::new(&[Method::Post]).rate_limit("30/0.5");

/// The handler: its arguments are extractors the pipeline resolves.
pub async fn handle(user: User) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "user_id": user.id })))
}
`,
    );
    const text = await Deno.readTextFile(systemLib);
    // After the last `mod x;` declaration (not an inline `mod tests { ... }`).
    const declared = text.replace(/(\n(pub )?mod [^\n{]*;)(?![\s\S]*\n(pub )?mod [^\n{]*;)/, `$1\npub mod ${module};`);
    if (declared === text) throw new Error(`systems/${system}/src/lib.rs declares no module to add ${module} after`);
    await Deno.writeTextFile(systemLib, declared);
    written.push(`systems/${system}/src/lib.rs`);
  }
  await write(
    `functions/${name}/Cargo.toml`,
    `[package]
name = "${name}"
version.workspace = true
edition.workspace = true
license.workspace = true

# Wiring only: the handler and its route live in the system crate.
[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
${systemCrate}.workspace = true
edgeworks-service.workspace = true
`,
  );
  await write(
    `functions/${name}/src/lib.rs`,
    `//! \`${name}\`: wiring only. The logic lives in \`systems/${system}\`.

use ${lib(systemCrate)}::${module} as system;
use edgeworks_service::export_handler;

export_handler!(system::handle, system::ROUTE);
`,
  );
  await write(
    `supabase/functions/${name}/index.ts`,
    `// ${name}: ${system} (Rust, in ./pkg).
import * as glue from "./pkg/${module}.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("${name}", glue, new URL("./pkg/${module}_bg.wasm", import.meta.url));
`,
  );
  await write(
    "supabase/config.toml",
    `
[functions.${name}]
enabled = true
verify_jwt = false
entrypoint = "./functions/${name}/index.ts"
static_files = ["./functions/${name}/pkg/*"]
`,
    true,
  );
  await write(
    `tests/${system}/${module}.test.ts`,
    `// ${name} through the gateway.
import { assertEquals } from "../support/assert.ts";
import { callFunction, createUser } from "../support/stack.ts";

Deno.test("${name} answers a signed-in user", async () => {
  const user = await createUser();
  const r = await callFunction("${name}", { token: user.token, body: {} });
  assertEquals(r.status, 200, JSON.stringify(r.body));
});

Deno.test("${name} refuses a caller without a token", async () => {
  const r = await callFunction("${name}", { token: null, body: {} });
  assertEquals(r.status, 401);
});
`,
  );
  return written;
}

if (import.meta.main) {
  const [command, ...args] = Deno.args;
  if (command === "check") {
    const problems = await check(args[0] ?? ".");
    for (const p of problems) console.error(`function definitions disagree: ${p}`);
    if (problems.length) Deno.exit(1);
    console.log("functions/*, supabase/functions/*/index.ts and config.toml agree");
  } else if (command === "create" && args.length >= 2) {
    try {
      for (const path of await create(args[2] ?? ".", args[0], args[1])) console.log(`wrote ${path}`);
    } catch (e) {
      console.error(e instanceof Error ? e.message : String(e));
      Deno.exit(1);
    }
  } else {
    console.error("usage: functions.ts check [root] | create <system> <name> [root]");
    Deno.exit(2);
  }
}

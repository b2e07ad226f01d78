// The three-place check (scripts/lib/functions.ts) on scratch copies of the
// repository's function definitions: a copy agrees; the same copy missing a
// config.toml block, or a shim, is caught; and what `create` writes agrees.
import { assert, assertEquals } from "../support/assert.ts";
import { check, create } from "../../scripts/lib/functions.ts";

const root = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/** Copies functions/*, the shims and config.toml into a temporary root. */
async function scratch(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ew-functions-" });
  const copy = async (from: string, to: string) => {
    await Deno.mkdir(`${dir}/${to}`.replace(/\/[^/]*$/, ""), { recursive: true });
    await Deno.copyFile(`${root}/${from}`, `${dir}/${to}`);
  };
  for await (const e of Deno.readDir(`${root}/functions`)) {
    await copy(`functions/${e.name}/Cargo.toml`, `functions/${e.name}/Cargo.toml`);
  }
  for await (const e of Deno.readDir(`${root}/supabase/functions`)) {
    try {
      await copy(`supabase/functions/${e.name}/index.ts`, `supabase/functions/${e.name}/index.ts`);
    } catch { /* not a function */ }
  }
  await copy("supabase/config.toml", "supabase/config.toml");
  return dir;
}

Deno.test("a faithful copy of the function definitions agrees", async () => {
  const dir = await scratch();
  try {
    assertEquals(await check(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a function missing from config.toml is caught by name", async () => {
  const dir = await scratch();
  try {
    const path = `${dir}/supabase/config.toml`;
    const text = await Deno.readTextFile(path);
    // The block: its header line up to the next table header.
    const without = text.replace(/^\[functions\.health\]\n(?:(?!\[)[^\n]*\n)*/m, "");
    assert(without !== text, "the scratch config had a [functions.health] block to remove");
    await Deno.writeTextFile(path, without);
    assertEquals(await check(dir), ["health: no [functions.health] in supabase/config.toml"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a function without its shim is caught", async () => {
  const dir = await scratch();
  try {
    await Deno.remove(`${dir}/supabase/functions/chat-status/index.ts`);
    assertEquals(await check(dir), ["chat-status: no shim supabase/functions/chat-status/index.ts"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("what create writes for a new function agrees with itself", async () => {
  const dir = await scratch();
  try {
    await Deno.mkdir(`${dir}/systems/demo/src`, { recursive: true });
    await Deno.writeTextFile(`${dir}/systems/demo/Cargo.toml`, '[package]\nname = "edgeworks-demo"\n');
    await Deno.writeTextFile(
      `${dir}/systems/demo/src/lib.rs`,
      "//! demo\n\npub mod other;\n\n#[cfg(test)]\nmod tests {}\n",
    );
    const written = await create(dir, "demo", "demo-hello");
    assert(written.includes("functions/demo-hello/src/lib.rs"));
    assertEquals(await check(dir), []);
    const lib = await Deno.readTextFile(`${dir}/systems/demo/src/lib.rs`);
    assert(lib.includes("pub mod demo_hello;"), lib);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// The hosted runtime's restrictions, applied to a local function process
// (scripts/local/functions_host.ts + function_entry.ts), checked from inside a
// fixture function (tests/fixtures/edge/functions/sandbox).
import { assert, assertEquals } from "../../support/assert.ts";
import { call, startHost } from "./_host.ts";

async function sandbox(query: string, env: Record<string, string> = {}) {
  const host = await startHost({}, env);
  try {
    const r = await call(host, "sandbox", query);
    assertEquals(r.status, 200);
    return await r.json();
  } finally {
    await host.stop();
  }
}

Deno.test("a function reads a file its static_files list", async () => {
  const out = await sandbox("?check=read&path=../../assets/listed-one.txt");
  assertEquals(out, { ok: true, value: "a static file the config lists\n" });
});

Deno.test("a function cannot read a file outside its static_files and folder", async () => {
  for (const path of ["../../assets/unlisted.txt", "../../config.toml", "/etc/hostname"]) {
    const out = await sandbox(`?check=read&path=${encodeURIComponent(path)}`);
    assertEquals(out.ok, false, path);
    assertEquals(out.error, "NotCapable", path);
  }
});

Deno.test("a function cannot spawn a process", async () => {
  const out = await sandbox("?check=spawn");
  assertEquals(out.ok, false);
  assertEquals(out.error, "NotSupported");
});

Deno.test("Worker, Deno.openKv and Deno.cron are absent", async () => {
  assertEquals((await sandbox("?check=worker")).value, "undefined");
  assertEquals((await sandbox("?check=kv")).value, "undefined");
  assertEquals((await sandbox("?check=cron")).value, "undefined");
});

Deno.test("SharedArrayBuffer is plain ArrayBuffer", async () => {
  assertEquals(await sandbox("?check=sharedArrayBuffer"), { ok: true, value: true });
});

Deno.test("Deno.exit does not end the function", async () => {
  assertEquals(await sandbox("?check=exit"), { ok: true, value: "still running" });
});

Deno.test("synchronous writes throw inside a handler; async writes to the temporary folder work", async () => {
  const sync = await sandbox("?check=writeSync");
  assertEquals(sync.ok, false);
  assertEquals(sync.error, "NotSupported");
  assertEquals(await sandbox("?check=writeTmp"), { ok: true, value: "written" });
});

Deno.test("a function cannot write outside its temporary folder", async () => {
  const out = await sandbox("?check=writeOutside");
  assertEquals(out.ok, false);
  assertEquals(out.error, "NotCapable");
});

Deno.test("the working directory is the function's folder", async () => {
  const out = await sandbox("?check=cwd");
  assert(String(out.value).endsWith("/tests/fixtures/edge/functions/sandbox"), out.value);
});

Deno.test("a function sees the env it is given and not the supervisor's control token", async () => {
  const out = await sandbox("?check=env", { SUPABASE_DB_URL: "postgresql://example" });
  assertEquals(out.value, { db_url: true, control_token: false });
});

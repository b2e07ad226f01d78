// The time-zone oracle (crates/runtime/src/tz.rs) on the real host: the wasm
// has no time-zone database and asks Intl. The same offsets as the native
// tests (jiff's database), unknown zones refused, the formatter cache bounded.
import { assert, assertEquals } from "../support/assert.ts";
import * as glue from "../fixtures/shim-fixture/pkg/shim_fixture.js";
import { createHandler } from "../../supabase/functions/_shared/serve.ts";

const wasmUrl = new URL("../fixtures/shim-fixture/pkg/shim_fixture_bg.wasm", import.meta.url);
const handler = createHandler(glue, wasmUrl, { name: "shim-fixture", env: () => ({}), maxReadBytes: 1 << 20 });

async function ask(zone: string, at: number[] = []) {
  const r = await handler(
    new Request(`http://fixture.local/shim-fixture/tz?zone=${encodeURIComponent(zone)}&at=${at.join(",")}`),
  );
  assertEquals(r.status, 200);
  return (await r.json()).data as { known: boolean; offsets?: (number | null)[]; error?: string };
}

// The table of crates/runtime/src/tz.rs's `known_offsets` test.
const KNOWN: [string, number, number][] = [
  ["UTC", 1_772_953_200, 0],
  ["America/New_York", 1_772_953_199, -5 * 3600], // 2026-03-08T06:59:59Z
  ["America/New_York", 1_772_953_200, -4 * 3600], // 2026-03-08T07:00:00Z
  ["Europe/London", 1_792_890_000, 0], // 2026-10-25T01:00:00Z
  ["Europe/London", 1_792_889_999, 3600],
  ["Australia/Lord_Howe", 1_775_314_800, 37_800], // 2026-04-04T15:00:00Z
  ["Australia/Lord_Howe", 1_775_314_799, 39_600],
  ["Asia/Kolkata", 1_772_953_200, 19_800],
  ["America/Santiago", 1_775_357_999, -3 * 3600], // 2026-04-05T02:59:59Z
  ["America/Santiago", 1_775_358_000, -4 * 3600],
];

Deno.test("the wasm's offsets across DST transitions are the native database's", async () => {
  for (const [zone, at, offset] of KNOWN) {
    const a = await ask(zone, [at]);
    assert(a.known, zone);
    assertEquals(a.offsets, [offset], `${zone} at ${at}`);
  }
});

Deno.test("an unknown zone is not known, and no instance traps", async () => {
  for (const zone of ["Mars/Olympus_Mons", "", "Europe/Londonn"]) {
    const a = await ask(zone, [0]);
    assertEquals(a.known, false, zone);
    assertEquals(a.error, "Unknown");
  }
  assert((await ask("Europe/London")).known);
});

Deno.test("every zone Intl lists works, past the formatter cache's bound", async () => {
  const zones = Intl.supportedValuesOf("timeZone");
  assert(zones.length > 300, `${zones.length}`);
  for (const zone of zones) {
    const a = await ask(zone, [0, 1_780_000_000]);
    assert(a.known, zone);
    for (const o of a.offsets!) assert(typeof o === "number" && Math.abs(o) <= 14 * 3600, `${zone}: ${o}`);
  }
  // Evicted formatters come back with the same answers.
  assertEquals((await ask("Australia/Lord_Howe", [1_775_314_800])).offsets, [37_800]);
});

Deno.test("the wasm's offsets agree with Intl's own longOffset every 61 minutes of 2026", async () => {
  const start = Date.UTC(2026, 0, 1) / 1000;
  const at: number[] = [];
  for (let t = start; t < start + 366 * 86400; t += 61 * 60) at.push(t);
  for (
    const zone of ["America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago", "Pacific/Chatham"]
  ) {
    const fmt = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "longOffset" });
    const expected = at.map((t) => {
      const name = fmt.formatToParts(t * 1000).find((p) => p.type === "timeZoneName")!.value; // GMT-04:00
      const m = /^GMT(?:([+-])(\d\d):(\d\d))?$/.exec(name)!;
      return m[1] ? (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 3600 + Number(m[3]) * 60) : 0;
    });
    // In chunks: the query string stays short.
    for (let i = 0; i < at.length; i += 400) {
      assertEquals((await ask(zone, at.slice(i, i + 400))).offsets, expected.slice(i, i + 400), zone);
    }
  }
});

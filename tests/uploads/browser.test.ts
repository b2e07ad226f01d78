// The upload client in a real browser: Debian's Chromium, headless, driven by
// playwright-core (no browser download: executablePath). A page using the
// bundled V2UploadClient (clients/upload-client/build.sh) uploads a chosen
// 7 MB PDF in two checksummed parts, shows progress, and ends "completed"
// once the pipeline has run. The screenshot is kept; its path is printed.
import { Buffer } from "node:buffer";
import { chromium } from "playwright-core";
import { assert, assertEquals } from "../support/assert.ts";
import { createUser, stack } from "../support/stack.ts";
import { documentRow, MiB, pdfBytes, runUploadJobs } from "./_lib.ts";

const CHROMIUM = "/usr/bin/chromium";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const root = new URL("../../", import.meta.url);
const dist = new URL("clients/upload-client/dist/", root);

/** Serves the page and the client bundle on a free loopback port. */
function servePage(): Deno.HttpServer<Deno.NetAddr> {
  const files: Record<string, [URL, string]> = {
    "/": [new URL("tests/uploads/browser/index.html", root), "text/html; charset=utf-8"],
    "/v2_upload_client.js": [new URL("v2_upload_client.js", dist), "text/javascript"],
    "/upload_client_bg.wasm": [new URL("upload_client_bg.wasm", dist), "application/wasm"],
  };
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const f = files[new URL(req.url).pathname];
    if (!f) return new Response("not found", { status: 404 });
    return new Response(await Deno.readFile(f[0]), { headers: { "content-type": f[1] } });
  });
}

Deno.test({
  name: "a page using the client uploads a chosen file, shows progress and ends completed",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  await Deno.stat(new URL("v2_upload_client.js", dist)).catch(() => {
    throw new Error("the client is not built: run clients/upload-client/build.sh (scripts/test does)");
  });
  const user = await createUser();
  const server = servePage();
  const profile = await Deno.makeTempDir({ prefix: "ew-chromium-" });
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
  });
  try {
    const page = await ctx.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const fragment = new URLSearchParams({ url: stack.url, anon: stack.anonKey, token: user.token, user: user.id });
    await page.goto(`http://127.0.0.1:${server.addr.port}/#${fragment}`);
    await page.setInputFiles("#file", {
      name: "browser.pdf",
      mimeType: "application/pdf",
      buffer: Buffer.from(pdfBytes(7 * MiB, 77)),
    });
    // Progress between the ends was shown on the way (the log keeps every report).
    await page.waitForFunction(() => document.getElementById("status")!.textContent === "processing", null, {
      timeout: 60_000,
    });
    const log = await page.textContent("#log");
    // Parts finish in any order: some report between none and all of the bytes.
    const between = [...(log ?? "").matchAll(/upload: (\d+)\/7340032/g)].map((m) => Number(m[1]));
    assert(between.some((b) => b > 0 && b < 7340032), `a part's progress was shown: ${log}`);
    assertEquals(await page.getAttribute("#bar", "value"), "100");

    const id = await page.evaluate(() => (window as unknown as { documentId: string }).documentId);
    await runUploadJobs(); // parse (built-in: flags off)
    await runUploadJobs(); // embed
    assertEquals((await documentRow(id)).status, "completed");
    await page.waitForFunction(() => document.getElementById("status")!.textContent === "completed", null, {
      timeout: 20_000,
    });
    // Outside the stack's state directory, which scripts/test removes.
    const dir = Deno.env.get("EDGEWORKS_ARTIFACTS_DIR") ??
      `${Deno.env.get("HOME") ?? "/tmp"}/.cache/edgeworks/artifacts`;
    await Deno.mkdir(dir, { recursive: true });
    const shot = `${dir}/upload-client-browser.png`;
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${shot}`);
    assertEquals(errors, []);
  } finally {
    await ctx.close();
    await server.shutdown();
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
});

// file-upload through the gateway: signed upload URLs into chat-files under
// the user's folder, type by magic bytes, the 10 MB limit, owner-only access.
import { assert, assertEquals } from "../support/assert.ts";
import { assertEnvelope, callFunction, stack, type TestUser, withDb } from "../support/stack.ts";
import { newUser } from "./_lib.ts";

const FN = "file-upload";
const MB10 = 10 * 1024 * 1024;
const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 73, 72, 68, 82]);
const EXE = new Uint8Array([0x4d, 0x5a, 0x90, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0x00]);

async function prepare(user: TestUser, file_name: string, size: number) {
  return await callFunction(FN, { token: user.token, body: { file_name, size } });
}

async function put(signedUrl: string, bytes: Uint8Array, contentType: string) {
  const r = await fetch(signedUrl, { method: "PUT", headers: { "content-type": contentType }, body: bytes as unknown as BodyInit });
  return { status: r.status, body: await r.text() };
}

async function complete(user: TestUser, upload_id: string) {
  const r = await fetch(`${stack.functionUrl(FN)}/complete`, {
    method: "POST",
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}`, "content-type": "application/json" },
    body: JSON.stringify({ upload_id }),
  });
  return { status: r.status, body: await r.json() };
}

async function direct(user: TestUser, name: string, bytes: Uint8Array) {
  const r = await fetch(`${stack.functionUrl(FN)}?name=${encodeURIComponent(name)}`, {
    method: "POST",
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}`, "content-type": "application/octet-stream" },
    body: bytes as unknown as BodyInit,
  });
  return { status: r.status, body: await r.json() };
}

Deno.test("a PNG goes through a signed upload URL into the user's folder and is checked by content", async () => {
  const user = await newUser();
  const p = await prepare(user, "cat photo.png", PNG.length);
  assertEquals(p.status, 200, JSON.stringify(p.body));
  const d = p.body.data;
  assert(d.path.startsWith(`${user.id}/${d.upload_id}/`), d.path);
  assertEquals((await put(d.signed_url, PNG, "image/png")).status, 200);
  const c = await complete(user, d.upload_id);
  assertEquals(c.status, 200, JSON.stringify(c.body));
  assertEquals([c.body.data.status, c.body.data.mime_type, c.body.data.size_bytes], ["uploaded", "image/png", PNG.length]);
  const g = await callFunction(FN, { method: "GET", token: user.token, query: `id=${d.upload_id}` });
  assertEquals(g.status, 200);
  const bytes = new Uint8Array(await (await fetch(g.body.data.download_url)).arrayBuffer());
  assertEquals([...bytes], [...PNG]);
  const [obj] = await withDb((sql) => sql`select name from storage.objects where bucket_id = 'chat-files' and name = ${d.path}`);
  assertEquals(obj?.name, d.path);
});

Deno.test("10 MB + 1 is 413, both when asking for an upload URL and as a direct body", async () => {
  const user = await newUser();
  const p = await prepare(user, "big.pdf", MB10 + 1);
  assertEquals(p.status, 413);
  assertEnvelope(p.body, "file_too_large");
  const big = new Uint8Array(MB10 + 1);
  big.set(new TextEncoder().encode("%PDF-1.7\n"));
  const d = await direct(user, "big.pdf", big);
  assertEquals(d.status, 413);
  assertEnvelope(d.body);
  // Exactly 10 MB is accepted.
  const ok = await direct(user, "ok.pdf", big.subarray(0, MB10));
  assertEquals(ok.status, 200, JSON.stringify(ok.body));
  assertEquals(ok.body.data.size_bytes, MB10);
  // A client that declared a small size cannot store more than 10 MB behind it.
  const liar = await prepare(user, "liar.pdf", 10);
  const up = await put(liar.body.data.signed_url, big, "application/pdf");
  assertEquals(up.status, 413, up.body);
  const [row] = await withDb((sql) => sql`select count(*)::int as n from file_uploads where user_id = ${user.id} and status = 'uploaded'`);
  assertEquals(row.n, 1);
});

Deno.test("an .exe renamed .png is 415 and nothing is kept", async () => {
  const user = await newUser();
  const p = await prepare(user, "holiday.png", EXE.length);
  const d = p.body.data;
  assertEquals((await put(d.signed_url, EXE, "image/png")).status, 200);
  const c = await complete(user, d.upload_id);
  assertEquals(c.status, 415, JSON.stringify(c.body));
  assertEnvelope(c.body, "executable_refused");
  const [row] = await withDb((sql) => sql`select status from file_uploads where id = ${d.upload_id}`);
  assertEquals(row.status, "rejected");
  const objects = await withDb((sql) => sql`select 1 from storage.objects where bucket_id = 'chat-files' and name = ${d.path}`);
  assertEquals(objects.length, 0);
  const direct415 = await direct(user, "holiday.png", EXE);
  assertEquals(direct415.status, 415);
  assertEnvelope(direct415.body, "executable_refused");
  const unknown = await direct(user, "data.png", new Uint8Array([0, 1, 2, 3, 255, 254]));
  assertEquals(unknown.status, 415);
  assertEnvelope(unknown.body, "unsupported_media_type");
});

Deno.test("another user's file is refused: read, complete, delete and the bucket itself", async () => {
  const owner = await newUser();
  const other = await newUser();
  const up = await direct(owner, "notes.txt", new TextEncoder().encode("private notes"));
  assertEquals(up.status, 200, JSON.stringify(up.body));
  const id = up.body.data.id;
  for (const [method, query, path] of [["GET", `id=${id}`, ""], ["DELETE", `id=${id}`, ""]] as const) {
    const r = await callFunction(FN + path, { method, token: other.token, query });
    assertEquals(r.status, 404, `${method}: ${JSON.stringify(r.body)}`);
    assertEnvelope(r.body, "file_not_found");
  }
  assertEquals((await complete(other, id)).status, 404);
  // Straight to the Storage API or over REST with the other user's token: nothing.
  const s = await fetch(`${stack.url}/storage/v1/object/authenticated/chat-files/${up.body.data.object_path}`, {
    headers: { apikey: stack.anonKey, authorization: `Bearer ${other.token}` },
  });
  assert(s.status >= 400, `storage answered ${s.status}`);
  await s.body?.cancel();
  const rest = await fetch(`${stack.url}/rest/v1/file_uploads?id=eq.${id}`, {
    headers: { apikey: stack.anonKey, authorization: `Bearer ${other.token}` },
  });
  assertEquals(await rest.json(), []);
  // The owner still has it.
  const mine = await callFunction(FN, { method: "GET", token: owner.token, query: `id=${id}` });
  assertEquals([mine.status, mine.body.data.mime_type], [200, "text/plain"]);
});

Deno.test("bad file-upload requests are 4xx in the envelope", async () => {
  const user = await newUser();
  for (const body of [{ file_name: "a.png" }, { file_name: "", size: 3 }, { file_name: "a.png", size: 0 }, { file_name: "a.png", size: 3, conversation_id: "nope" }]) {
    const r = await callFunction(FN, { token: user.token, body });
    assertEquals(r.status, 422, JSON.stringify([body, r.body]));
    assertEnvelope(r.body, "validation_failed");
  }
  const noConv = await callFunction(FN, { token: user.token, body: { file_name: "a.png", size: 3, conversation_id: crypto.randomUUID() } });
  assertEquals(noConv.status, 404);
  const missing = await prepare(user, "a.png", 3);
  assertEquals((await complete(user, missing.body.data.upload_id)).status, 409);
  assertEquals((await callFunction(FN, { token: null, body: { file_name: "a", size: 1 } })).status, 401);
});

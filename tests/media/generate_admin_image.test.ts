// generate-admin-image: admins and the service role only; a real PNG stored
// through Storage and recorded like any image.
import { assert, assertEquals } from "../support/assert.ts";
import { signJwt } from "../support/stack.ts";
import { callFunction, createUser, mediaTest, PNG_SIGNATURE, pngSize, readObject, stack, withDb } from "./_lib.ts";

async function tokenWith(userId: string, appMetadata: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return await signJwt({
    iss: `${stack.url.replace(/\/+$/, "")}/auth/v1`,
    sub: userId,
    aud: "authenticated",
    role: "authenticated",
    app_metadata: appMetadata,
    user_metadata: { role: "admin" },
    iat: now - 5,
    exp: now + 600,
  });
}

Deno.test({
  name: "an admin user gets a rendered PNG stored under their prefix and recorded as an image",
  ...mediaTest,
  fn: async () => {
    const admin = await createUser();
    const token = await tokenWith(admin.id, { provider: "email", role: "admin" });
    const r = await callFunction("generate-admin-image", {
      token,
      body: { prompt: "a brass telescope", mode: "high", metadata: { purpose: "test" } },
    });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    const img = r.body.image;
    assertEquals([r.body.success, img.prompt, img.mode], [true, "a brass telescope", "high"]);
    assert(img.path.startsWith(`${admin.id}/admin/`), img.path);
    assertEquals(img.metadata, { purpose: "test" });
    const viaUrl = new Uint8Array(await (await fetch(img.url)).arrayBuffer());
    assertEquals([...viaUrl.slice(0, 8)], PNG_SIGNATURE);
    assertEquals(pngSize(viaUrl), [512, 512]);
    const stored = await readObject(img.path);
    assertEquals(stored.length, viaUrl.length);
    const rows = await withDb((sql) => sql`select * from public.images where id = ${img.id}`, 1);
    assertEquals([rows[0].user_id, rows[0].status, rows[0].storage_path], [admin.id, "completed", img.path]);

    // Deterministic: the same prompt renders the same picture.
    const again = await callFunction("generate-admin-image", {
      token,
      body: { prompt: "a brass telescope", mode: "high" },
    });
    const second = await readObject(again.body.image.path);
    assertEquals(second.length, stored.length);
    assert(second.every((b, i) => b === stored[i]), "same bytes");
  },
});

Deno.test({
  name: "the service role may generate; its images live under admin/ with no owner",
  ...mediaTest,
  fn: async () => {
    const r = await callFunction("generate-admin-image", { token: stack.serviceKey, body: { prompt: "x" } });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    assert(r.body.image.path.startsWith("admin/admin/"), r.body.image.path);
    assertEquals(pngSize(await readObject(r.body.image.path)), [256, 256]);
    const rows = await withDb((sql) => sql`select user_id from public.images where id = ${r.body.image.id}`, 1);
    assertEquals(rows[0].user_id, null);
  },
});

Deno.test({
  name: "non-admins are 403 (user_metadata does not count), no token is 401, and nothing is stored",
  ...mediaTest,
  fn: async () => {
    const user = await createUser();
    const count = async () => (await withDb((sql) => sql`select count(*)::int as n from public.images`, 1))[0].n;
    const before = await count();
    for (const token of [user.token, await tokenWith(user.id, { role: "Admin" }), await tokenWith(user.id, {})]) {
      const r = await callFunction("generate-admin-image", { token, body: { prompt: "x" } });
      assertEquals([r.status, r.body.error?.code], [403, "admin_required"]);
    }
    assertEquals(
      (await callFunction("generate-admin-image", { token: stack.anonKey, body: { prompt: "x" } })).status,
      401,
    );
    assertEquals((await callFunction("generate-admin-image", { body: { prompt: "x" } })).status, 401);
    const admin = await tokenWith(user.id, { role: "admin" });
    const bad = await callFunction("generate-admin-image", { token: admin, body: { prompt: "", mode: "ultra" } });
    assertEquals(bad.status, 422);
    assertEquals(await count(), before);
  },
});

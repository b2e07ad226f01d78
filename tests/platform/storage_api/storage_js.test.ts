// The Storage REST API at /storage/v1 through the real client: storage-js,
// as supabase-js exposes it (`supabase.storage`). Each test makes its own
// bucket through the bucket API and removes it at the end.
import { assert, assertEquals } from "../../support/assert.ts";
import { signJwt, stack, withDb } from "../../support/stack.ts";
import {
  anonClient,
  createUser,
  randomBytes,
  rowOf,
  s3Bytes,
  serviceClient,
  storedNames,
  userClient,
  withBucket,
  withOwnFolderPolicy,
} from "./support.ts";

const text = (s: string) => new TextEncoder().encode(s);

async function bytesOf(blob: Blob | null): Promise<Uint8Array> {
  assert(blob, "a body");
  return new Uint8Array(await blob.arrayBuffer());
}

/** The StorageApiError fields a caller branches on. */
function failure(error: unknown): { status: number; code: string | undefined } {
  const e = error as { status?: number; statusCode?: string; code?: string } | null;
  assert(e, "an error");
  return { status: e.status ?? 0, code: e.code };
}

Deno.test("a user uploads, downloads, lists, moves, copies and removes files in their own folder with storage-js", async () => {
  const user = await createUser();
  await withBucket({}, async (bucket) => {
    await withOwnFolderPolicy(bucket, async () => {
      const files = userClient(user).storage.from(bucket);
      const dir = user.id;

      // A Blob goes as a multipart form, raw bytes as the body: both as storage-js sends them.
      const note = new Blob(["hello — ünïcode\r\n"], { type: "text/plain" });
      const up1 = await files.upload(`${dir}/notes/hello.txt`, note, { cacheControl: "60" });
      assertEquals(up1.error, null);
      assertEquals(up1.data?.path, `${dir}/notes/hello.txt`);
      assertEquals(up1.data?.fullPath, `${bucket}/${dir}/notes/hello.txt`);
      const raw = randomBytes(70_000);
      const up2 = await files.upload(`${dir}/data.bin`, raw, { contentType: "application/octet-stream" });
      assertEquals(up2.error, null);

      const down = await files.download(`${dir}/notes/hello.txt`);
      assertEquals(down.error, null);
      assertEquals(await bytesOf(down.data), new Uint8Array(await note.arrayBuffer()));
      assertEquals(down.data?.type, "text/plain");
      assertEquals(await bytesOf((await files.download(`${dir}/data.bin`)).data), raw);
      // The authenticated download path honours a byte range, as browsers' media elements ask for.
      const part = await fetch(`${stack.url}/storage/v1/object/authenticated/${bucket}/${dir}/data.bin`, {
        headers: { authorization: `Bearer ${user.token}`, range: "bytes=10-19" },
      });
      assertEquals(part.status, 206);
      assertEquals(new Uint8Array(await part.arrayBuffer()), raw.slice(10, 20));

      const info = await files.info(`${dir}/notes/hello.txt`);
      assertEquals(info.error, null);
      assertEquals(info.data?.size, note.size);
      assertEquals(info.data?.contentType, "text/plain");
      assertEquals(info.data?.cacheControl, "max-age=60");

      // A second upload to the same path without upsert is a conflict; with upsert it replaces.
      const again = await files.upload(`${dir}/data.bin`, text("other"));
      assertEquals(failure(again.error).status, 409);
      assertEquals(await bytesOf((await files.download(`${dir}/data.bin`)).data), raw);
      assertEquals((await files.upload(`${dir}/data.bin`, text("v2"), { upsert: true })).error, null);
      assertEquals(new TextDecoder().decode(await bytesOf((await files.download(`${dir}/data.bin`)).data)), "v2");

      const top = await files.list(dir);
      assertEquals(top.error, null);
      assertEquals(top.data?.map((e) => [e.name, e.id === null]), [["data.bin", false], ["notes", true]]);
      assertEquals(top.data?.[0].metadata?.size, 2);
      const inner = await files.list(`${dir}/notes`);
      assertEquals(inner.data?.map((e) => e.name), ["hello.txt"]);
      assertEquals((await files.list(dir, { search: "not" })).data?.map((e) => e.name), ["notes"]);
      assertEquals((await files.list(dir, { limit: 1, offset: 1 })).data?.map((e) => e.name), ["notes"]);

      assertEquals((await files.move(`${dir}/notes/hello.txt`, `${dir}/moved.txt`)).error, null);
      assertEquals(failure((await files.download(`${dir}/notes/hello.txt`)).error).status, 404);
      assertEquals(await s3Bytes(bucket, `${dir}/notes/hello.txt`), null, "the old key's bytes are gone");
      assertEquals(
        await bytesOf((await files.download(`${dir}/moved.txt`)).data),
        new Uint8Array(await note.arrayBuffer()),
      );

      const copied = await files.copy(`${dir}/moved.txt`, `${dir}/copy.txt`);
      assertEquals(copied.error, null);
      assertEquals(copied.data?.path, `${bucket}/${dir}/copy.txt`);
      assertEquals(
        await bytesOf((await files.download(`${dir}/copy.txt`)).data),
        new Uint8Array(await note.arrayBuffer()),
      );

      const removed = await files.remove([`${dir}/moved.txt`, `${dir}/copy.txt`, `${dir}/never-there.txt`]);
      assertEquals(removed.error, null);
      assertEquals(removed.data?.map((o) => o.name).sort(), [`${dir}/copy.txt`, `${dir}/moved.txt`]);
      assertEquals(await storedNames(bucket), [`${dir}/data.bin`]);
      assertEquals(await s3Bytes(bucket, `${dir}/copy.txt`), null);
    });
  });
});

Deno.test("an RLS policy on storage.objects keeps a user out of another user's folder: refused, nothing stored, nothing visible", async () => {
  const [alice, bob] = [await createUser(), await createUser()];
  await withBucket({}, async (bucket) => {
    await withOwnFolderPolicy(bucket, async () => {
      const asAlice = userClient(alice).storage.from(bucket);
      const asBob = userClient(bob).storage.from(bucket);
      assertEquals((await asBob.upload(`${bob.id}/private.txt`, text("bob's"))).error, null);

      const intrusion = await asAlice.upload(`${bob.id}/planted.txt`, text("alice's"));
      assertEquals(failure(intrusion.error).status, 403);
      assertEquals(await rowOf(bucket, `${bob.id}/planted.txt`), undefined);
      assertEquals(await s3Bytes(bucket, `${bob.id}/planted.txt`), null);

      // Bob's file exists but is not Alice's to read, list, sign, overwrite, move or delete.
      assertEquals(failure((await asAlice.download(`${bob.id}/private.txt`)).error).status, 404);
      assertEquals((await asAlice.list(bob.id)).data, []);
      assertEquals(failure((await asAlice.createSignedUrl(`${bob.id}/private.txt`, 60)).error).status, 404);
      assertEquals(
        failure((await asAlice.upload(`${bob.id}/private.txt`, text("x"), { upsert: true })).error).status,
        403,
      );
      assertEquals(failure((await asAlice.move(`${bob.id}/private.txt`, `${alice.id}/stolen.txt`)).error).status, 404);
      assertEquals((await asAlice.remove([`${bob.id}/private.txt`])).data, []);
      // Anonymous callers get nothing at all.
      assertEquals(
        failure((await anonClient().storage.from(bucket).download(`${bob.id}/private.txt`)).error).status,
        404,
      );

      assertEquals(await storedNames(bucket), [`${bob.id}/private.txt`]);
      assertEquals(new TextDecoder().decode((await s3Bytes(bucket, `${bob.id}/private.txt`))!), "bob's");
    });
  });
});

Deno.test("signed download URLs serve the object without credentials; tampered, expired or other-object tokens are refused (400)", async () => {
  const user = await createUser();
  await withBucket({}, async (bucket) => {
    await withOwnFolderPolicy(bucket, async () => {
      const files = userClient(user).storage.from(bucket);
      const name = `${user.id}/report file.txt`;
      assertEquals((await files.upload(name, text("signed content"))).error, null);

      const signed = await files.createSignedUrl(name, 60);
      assertEquals(signed.error, null);
      const ok = await fetch(signed.data!.signedUrl);
      assertEquals(ok.status, 200);
      assertEquals(await ok.text(), "signed content");

      const url = new URL(signed.data!.signedUrl);
      const token = url.searchParams.get("token")!;
      const tampered = new URL(url);
      tampered.searchParams.set("token", token.slice(0, -4) + (token.endsWith("AAAA") ? "BBBB" : "AAAA"));
      const bad = await fetch(tampered);
      assertEquals(bad.status, 400);
      assertEquals((await bad.json()).code, "InvalidSignature");

      // A valid token for one object does not open another.
      assertEquals((await files.upload(`${user.id}/other.txt`, text("other"))).error, null);
      const elsewhere = new URL(url.toString().replace(encodeURI("report file.txt"), "other.txt"));
      const wrong = await fetch(elsewhere);
      assertEquals(wrong.status, 400);
      await wrong.body?.cancel();

      // Signed with the stack's secret but already expired.
      const now = Math.floor(Date.now() / 1000);
      const old = new URL(url);
      old.searchParams.set("token", await signJwt({ url: `${bucket}/${name}`, iat: now - 120, exp: now - 60 }));
      const expired = await fetch(old);
      assertEquals(expired.status, 400);
      assertEquals((await expired.json()).code, "ExpiredToken");

      const many = await files.createSignedUrls([name, `${user.id}/missing.txt`], 60);
      assertEquals(many.error, null);
      assertEquals(many.data?.map((d) => d.error === null), [true, false]);
      const viaBatch = await fetch(many.data![0].signedUrl!);
      assertEquals(await viaBatch.text(), "signed content");
    });
  });
});

Deno.test("a signed upload URL lets a holder without credentials upload to that path as the signer; a tampered token is refused", async () => {
  const [user, other] = [await createUser(), await createUser()];
  await withBucket({}, async (bucket) => {
    await withOwnFolderPolicy(bucket, async () => {
      const files = userClient(user).storage.from(bucket);
      const name = `${user.id}/from-signed.txt`;
      const signed = await files.createSignedUploadUrl(name);
      assertEquals(signed.error, null);
      assertEquals(signed.data?.path, name);

      // The holder needs no token of their own: an anonymous client uploads with the URL's token.
      const anon = anonClient().storage.from(bucket);
      const tamperedToken = signed.data!.token.slice(0, -3) + "abc";
      assertEquals(failure((await anon.uploadToSignedUrl(name, tamperedToken, text("evil"))).error).status, 400);
      assertEquals(await rowOf(bucket, name), undefined);

      const up = await anon.uploadToSignedUrl(
        name,
        signed.data!.token,
        new Blob(["via signed url"], { type: "text/plain" }),
      );
      assertEquals(up.error, null);
      assertEquals(up.data?.fullPath, `${bucket}/${name}`);
      assertEquals((await rowOf(bucket, name))?.owner, user.id);
      assertEquals(await (await files.download(name)).data?.text(), "via signed url");

      // The policy is checked when the URL is asked for: not for someone else's folder.
      const refused = await userClient(other).storage.from(bucket).createSignedUploadUrl(`${user.id}/planted.txt`);
      assertEquals(failure(refused.error).status, 403);
    });
  });
});

Deno.test("getPublicUrl of a public bucket serves without a token; a private bucket's public URL is 404", async () => {
  const admin = serviceClient();
  await withBucket({ public: true }, async (pub) => {
    await withBucket({ public: false }, async (priv) => {
      for (const b of [pub, priv]) {
        assertEquals((await admin.storage.from(b).upload("img/logo.txt", text(`in ${b}`))).error, null);
      }
      const open = await fetch(admin.storage.from(pub).getPublicUrl("img/logo.txt").data.publicUrl);
      assertEquals(open.status, 200);
      assertEquals(await open.text(), `in ${pub}`);
      const closed = await fetch(admin.storage.from(priv).getPublicUrl("img/logo.txt").data.publicUrl);
      assertEquals(closed.status, 404);
      await closed.body?.cancel();
    });
  });
});

Deno.test("bucket rules and bad input: unknown bucket 404, over the size limit 413, a disallowed type 415; nothing stored", async () => {
  const user = await createUser();
  await withBucket({ fileSizeLimit: 1000, allowedMimeTypes: ["image/*", "text/plain"] }, async (bucket) => {
    await withOwnFolderPolicy(bucket, async () => {
      const files = userClient(user).storage.from(bucket);
      // Control: within the limits it is stored.
      assertEquals(
        (await files.upload(`${user.id}/ok.png`, new Blob([randomBytes(1000)], { type: "image/png" }))).error,
        null,
      );

      const big = await files.upload(`${user.id}/big.png`, new Blob([randomBytes(1001)], { type: "image/png" }));
      assertEquals(failure(big.error), { status: 413, code: "EntityTooLarge" });
      const bigRaw = await files.upload(`${user.id}/big.txt`, randomBytes(1001), { contentType: "text/plain" });
      assertEquals(failure(bigRaw.error).status, 413);
      const html = await files.upload(`${user.id}/page.html`, new Blob(["<p>"], { type: "text/html" }));
      assertEquals(failure(html.error), { status: 415, code: "InvalidMimeType" });
      const missing = await userClient(user).storage.from("no-such-bucket-here").upload(`${user.id}/x.txt`, text("x"));
      assertEquals(failure(missing.error), { status: 404, code: "NoSuchBucket" });
      // URL parsing removes a literal `..`; an encoded slash reaches the server, which refuses the segment.
      const traversal = await files.upload(`${user.id}/..%2F..%2Fescape.txt`, text("x"));
      assertEquals(failure(traversal.error), { status: 400, code: "InvalidKey" });

      assertEquals(await storedNames(bucket), [`${user.id}/ok.png`]);
      for (const key of ["big.png", "big.txt", "page.html"]) {
        assertEquals(await s3Bytes(bucket, `${user.id}/${key}`), null);
      }
    });
  });
});

Deno.test("the bucket API creates, reads, lists, updates, empties and deletes buckets, and only the service role may", async () => {
  const admin = serviceClient().storage;
  const user = await createUser();
  const id = `t-${crypto.randomUUID().slice(0, 13)}`;
  assertEquals(failure((await userClient(user).storage.createBucket(id)).error).status, 403);

  const made = await admin.createBucket(id, { public: false, fileSizeLimit: "1MB", allowedMimeTypes: ["text/plain"] });
  assertEquals(made.data, { name: id });
  assertEquals(failure((await admin.createBucket(id)).error).status, 409);
  const got = await admin.getBucket(id);
  assertEquals(got.data?.file_size_limit, 1024 * 1024);
  assertEquals(got.data?.allowed_mime_types, ["text/plain"]);
  assert((await admin.listBuckets()).data?.some((b) => b.id === id));

  assertEquals((await admin.updateBucket(id, { public: true, fileSizeLimit: 10 })).error, null);
  assertEquals((await admin.getBucket(id)).data?.public, true);
  assertEquals(failure((await admin.from(id).upload("a.txt", text("more than ten bytes"))).error).status, 413);

  assertEquals((await admin.from(id).upload("a.txt", text("tiny"))).error, null);
  assertEquals(failure((await admin.deleteBucket(id)).error).status, 409);
  assertEquals((await admin.emptyBucket(id)).error, null);
  assertEquals(await s3Bytes(id, "a.txt"), null);
  assertEquals((await admin.deleteBucket(id)).error, null);
  assertEquals(failure((await admin.getBucket(id)).error).status, 404);
  const rows = await withDb((sql) => sql`select 1 from storage.buckets where id = ${id}`, 1);
  assertEquals(rows.length, 0);
});

Deno.test("the S3 endpoint and the REST API see the same bytes under the same bucket and key", async () => {
  await withBucket({}, async (bucket) => {
    const body = randomBytes(5000);
    assertEquals((await serviceClient().storage.from(bucket).upload("shared/one.bin", body)).error, null);
    assertEquals(await s3Bytes(bucket, "shared/one.bin"), body);
  });
});

Deno.test("a bad or missing token is refused with 401 InvalidJWT before anything else", async () => {
  const r = await fetch(`${stack.url}/storage/v1/object/list/uploads`, {
    method: "POST",
    headers: { authorization: `Bearer ${await signJwt({ role: "service_role", exp: 9999999999 }, "not-the-secret")}` },
    body: "{}",
  });
  assertEquals(r.status, 401);
  assertEquals((await r.json()).code, "InvalidJWT");
  const none = await fetch(`${stack.url}/storage/v1/bucket`);
  assertEquals(none.status, 401);
  await none.body?.cancel();
});

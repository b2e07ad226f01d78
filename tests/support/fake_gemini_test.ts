// Checks that the fake Gemini server answers in Google's documented shapes
// and that its scripting and recording work.
// Run: deno test --allow-net tests/support/fake_gemini_test.ts

import assert from "node:assert/strict";
import { startFakeGemini } from "./fake_gemini.ts";

const KEY = "fake-test-key-123";

function call(
  url: string,
  body: unknown,
  key: string | null = KEY,
): Promise<Response> {
  const headers: Record<string, string> = {
    "content-type": "application/json",
  };
  if (key !== null) headers["x-goog-api-key"] = key;
  return fetch(`${url}/v1beta/models/gemini-2.0-flash:generateContent`, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
  });
}

const question = {
  systemInstruction: { parts: [{ text: "You teach Biology." }] },
  contents: [
    { role: "user", parts: [{ text: "What is DNA?" }] },
    { role: "model", parts: [{ text: "A molecule." }] },
    { role: "user", parts: [{ text: "And RNA?" }] },
  ],
  generationConfig: {
    temperature: 0.7,
    maxOutputTokens: 2048,
    topP: 0.8,
    topK: 40,
  },
};

Deno.test("default answer echoes the last user message with usage", async () => {
  const g = await startFakeGemini();
  try {
    const r = await call(g.url, question);
    assert.equal(r.status, 200);
    const body = await r.json();
    assert.equal(body.candidates[0].content.role, "model");
    assert.equal(
      body.candidates[0].content.parts[0].text,
      "Fake Gemini answer to: And RNA?",
    );
    assert.equal(body.candidates[0].finishReason, "STOP");
    assert.equal(body.modelVersion, "gemini-2.0-flash");
    const u = body.usageMetadata;
    assert.equal(
      u.totalTokenCount,
      u.promptTokenCount + u.candidatesTokenCount,
    );
    const reqs = g.requests();
    assert.equal(reqs.length, 1);
    assert.equal(reqs[0].api_key, KEY);
    assert.equal(reqs[0].key_in_url, false);
    assert.deepEqual(reqs[0].body, question);
    const viaHttp = await (await fetch(`${g.url}/__requests`)).json();
    assert.deepEqual(viaHttp, reqs);
  } finally {
    await g.close();
  }
});

Deno.test("scripted steps are used once each, in order", async () => {
  const g = await startFakeGemini();
  try {
    const s = await fetch(`${g.url}/__script`, {
      method: "POST",
      body: JSON.stringify([
        { status: 500 },
        { status: 429, retry_after: 2, retry_delay: "17s" },
        { finish: "SAFETY" },
        {
          block_reason: "PROHIBITED_CONTENT",
        },
      ]),
    });
    assert.equal((await s.json()).queued, 4);

    let r = await call(g.url, question);
    assert.equal(r.status, 500);
    assert.equal((await r.json()).error.status, "INTERNAL");

    r = await call(g.url, question);
    assert.equal(r.status, 429);
    assert.equal(r.headers.get("retry-after"), "2");
    const e = (await r.json()).error;
    assert.equal(e.status, "RESOURCE_EXHAUSTED");
    assert.equal(
      e.details[0]["@type"],
      "type.googleapis.com/google.rpc.RetryInfo",
    );
    assert.equal(e.details[0].retryDelay, "17s");

    r = await call(g.url, question);
    const safety = await r.json();
    assert.equal(safety.candidates[0].finishReason, "SAFETY");
    assert.equal(safety.candidates[0].content, undefined);

    r = await call(g.url, question);
    const blocked = await r.json();
    assert.equal(blocked.promptFeedback.blockReason, "PROHIBITED_CONTENT");
    assert.equal(blocked.candidates, undefined);

    r = await call(g.url, question);
    assert.equal(r.status, 200, "queue exhausted: back to the default answer");
    await r.body?.cancel();
    assert.equal(g.requests().length, 5);
  } finally {
    await g.close();
  }
});

Deno.test("missing or wrong key is refused in Google's shapes", async () => {
  const g = await startFakeGemini({ apiKey: KEY });
  try {
    let r = await call(g.url, question, null);
    assert.equal(r.status, 403);
    assert.equal((await r.json()).error.status, "PERMISSION_DENIED");

    r = await call(g.url, question, "wrong");
    assert.equal(r.status, 400);
    const e = (await r.json()).error;
    assert.equal(e.status, "INVALID_ARGUMENT");
    assert.equal(e.details[0].reason, "API_KEY_INVALID");
    assert.equal(g.requests().length, 2, "refused requests are recorded too");
  } finally {
    await g.close();
  }
});

Deno.test("a body without contents is a 400 INVALID_ARGUMENT", async () => {
  const g = await startFakeGemini();
  try {
    const r = await call(g.url, { contents: [] });
    assert.equal(r.status, 400);
    assert.match((await r.json()).error.message, /contents is not specified/);
  } finally {
    await g.close();
  }
});

Deno.test("delay_ms holds the answer back", async () => {
  const g = await startFakeGemini();
  try {
    g.script({ delay_ms: 300, text: "late" });
    const started = Date.now();
    const r = await call(g.url, question);
    assert.equal((await r.json()).candidates[0].content.parts[0].text, "late");
    assert.ok(Date.now() - started >= 290);
  } finally {
    await g.close();
  }
});

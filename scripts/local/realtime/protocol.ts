// The Phoenix channels wire format as Supabase Realtime speaks it, both
// serializer versions a client may ask for with the `vsn` query parameter:
//   1.0.0  text frames, one JSON object {join_ref, ref, topic, event, payload}
//   2.0.0  text frames, one JSON array [join_ref, ref, topic, event, payload],
//          plus binary frames for user broadcasts: kind 3 (client push) and
//          kind 4 (server push), laid out as realtime-js's serializer reads them.
// Pure: no I/O, so the layouts are tested without a socket.

export type Vsn = "1.0.0" | "2.0.0";

export interface Message {
  join_ref: string | null;
  ref: string | null;
  topic: string;
  event: string;
  payload: any;
}

/** A user broadcast as carried in binary frames: the payload is JSON or raw bytes. */
export interface Broadcast {
  event: string;
  payload: unknown;
  binary: boolean;
}

const KIND_PUSH = 3;
const KIND_BROADCAST = 4;
const ENCODING_BINARY = 0;
const ENCODING_JSON = 1;

const enc = new TextEncoder();
const dec = new TextDecoder();

export function parseVsn(v: string | null): Vsn | null {
  if (v === null || v === "" || v === "1.0.0") return "1.0.0";
  if (v === "2.0.0") return "2.0.0";
  return null;
}

/** Decodes one frame; throws on anything malformed (the caller closes the socket). */
export function decodeFrame(vsn: Vsn, data: string | ArrayBuffer): Message {
  if (typeof data === "string") {
    const v = JSON.parse(data);
    if (vsn === "2.0.0") {
      if (!Array.isArray(v) || v.length !== 5) throw new Error("a 2.0.0 frame is a 5-element array");
      const [join_ref, ref, topic, event, payload] = v;
      return checked({ join_ref, ref, topic, event, payload });
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("a 1.0.0 frame is an object");
    return checked({
      join_ref: v.join_ref ?? null,
      ref: v.ref ?? null,
      topic: v.topic,
      event: v.event,
      payload: v.payload,
    });
  }
  if (vsn !== "2.0.0") throw new Error("binary frames need serializer 2.0.0");
  return decodeBinaryPush(new Uint8Array(data));
}

function checked(m: Message): Message {
  if (typeof m.topic !== "string" || typeof m.event !== "string") throw new Error("topic and event must be strings");
  if (m.join_ref !== null && typeof m.join_ref !== "string") m.join_ref = String(m.join_ref);
  if (m.ref !== null && typeof m.ref !== "string") m.ref = String(m.ref);
  return m;
}

/**
 * Kind 3: [kind, join_ref len, ref len, topic len, event len, meta len, encoding]
 * then join_ref, ref, topic, user event, metadata (JSON or empty), payload.
 * It becomes the same message a text `broadcast` push would be.
 */
function decodeBinaryPush(b: Uint8Array): Message {
  if (b.length < 7 || b[0] !== KIND_PUSH) throw new Error(`unsupported binary frame kind ${b[0]}`);
  const [joinLen, refLen, topicLen, eventLen, metaLen, encoding] = b.subarray(1, 7);
  let o = 7;
  const take = (n: number) => {
    if (o + n > b.length) throw new Error("binary frame shorter than its header says");
    const s = b.subarray(o, o + n);
    o += n;
    return s;
  };
  const join_ref = dec.decode(take(joinLen)) || null;
  const ref = dec.decode(take(refLen)) || null;
  const topic = dec.decode(take(topicLen));
  const event = dec.decode(take(eventLen));
  const meta = dec.decode(take(metaLen));
  const body = b.slice(o);
  const payload = encoding === ENCODING_JSON ? JSON.parse(dec.decode(body)) : body.buffer;
  return {
    join_ref,
    ref,
    topic,
    event: "broadcast",
    payload: {
      type: "broadcast",
      event,
      payload,
      ...(meta ? { meta: JSON.parse(meta) } : {}),
      binary: encoding === ENCODING_BINARY,
    },
  };
}

export function encodeMessage(vsn: Vsn, m: Message): string {
  if (vsn === "2.0.0") return JSON.stringify([m.join_ref, m.ref, m.topic, m.event, m.payload]);
  return JSON.stringify(m);
}

/**
 * A broadcast to a client. 2.0.0 clients get kind 4 binary frames:
 * [kind, topic len, event len, meta len, encoding] then topic, event, meta, payload.
 * 1.0.0 clients get a `broadcast` message; raw-byte payloads cannot be said
 * in JSON, so they get nothing (null).
 */
export function encodeBroadcast(vsn: Vsn, topic: string, b: Broadcast): string | Uint8Array<ArrayBuffer> | null {
  if (vsn === "1.0.0") {
    if (b.binary) return null;
    return encodeMessage(vsn, {
      join_ref: null,
      ref: null,
      topic,
      event: "broadcast",
      payload: { type: "broadcast", event: b.event, payload: b.payload },
    });
  }
  const t = enc.encode(topic);
  const e = enc.encode(b.event);
  if (t.length > 255 || e.length > 255) return null;
  const body = b.binary ? new Uint8Array(b.payload as ArrayBuffer) : enc.encode(JSON.stringify(b.payload ?? {}));
  const out = new Uint8Array(5 + t.length + e.length + body.length);
  out.set([KIND_BROADCAST, t.length, e.length, 0, b.binary ? ENCODING_BINARY : ENCODING_JSON], 0);
  out.set(t, 5);
  out.set(e, 5 + t.length);
  out.set(body, 5 + t.length + e.length);
  return out;
}

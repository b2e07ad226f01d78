// A keep-alive HTTP/1.1 client for one origin: the function's own Supabase
// project (PostgREST, Storage, Auth behind SUPABASE_URL), which the Rust
// functions call on almost every request.
//
// Why not fetch: measured on this machine (Deno 2.9.6, 8 lanes, a small JSON
// answer from a Deno.serve server on loopback), fetch costs the calling process
// 59-82 µs of CPU per exchange and this client 15-18 µs. On a request that makes
// one PostgREST call, that difference is a fifth of the function's CPU.
//
// What it does: HTTP/1.1 over TCP (Deno.connect) or TLS (Deno.connectTls),
// requests with a content-length body, answers with a content-length, chunked
// or read-to-close body, 1xx answers skipped, connections kept while the server
// allows it (`connection: close`, HTTP/1.0 and read-to-close bodies end them)
// and dropped after IDLE_MS unused. What it leaves to fetch: other origins,
// redirects (it returns a 3xx as is), compression (it asks for none), proxies.
//
// A pooled connection the server closed meanwhile fails on first use without a
// byte of answer; the request then goes once more on a new connection (what
// browsers do). Past that, a failure is the caller's.

/** A connection unused this long is closed rather than reused: servers close idle ones too. */
export const IDLE_MS = 2_000;
/** The status line and headers of an answer may not exceed this. */
export const MAX_HEAD_BYTES = 64 * 1024;

/** Bytes backed by a plain ArrayBuffer (what the wasm glue takes). */
type Bytes = ReturnType<Uint8Array["slice"]>;

export interface Http1Answer {
  status: number;
  /** Lower-case names, `name\nvalue\n` per header, in the order received. */
  headers: string;
  body: Bytes;
}

/** Why an exchange failed: its deadline passed, or anything else. */
export class Http1Failure extends Error {
  constructor(
    message: string,
    readonly timeout: boolean,
    /** Set when no connection could be opened: nothing was sent. */
    readonly unconnected: Error | null = null,
  ) {
    super(message);
  }
}

/**
 * The caller's hold on an exchange: `end(timeout)` stops it (its connection is
 * closed, so a pending read or write fails at once).
 */
export class Exchange {
  ended = false;
  timedOut = false;
  current: { close(): void } | null = null;

  end(timeout: boolean) {
    if (this.ended) return;
    this.ended = true;
    this.timedOut = timeout;
    this.current?.close();
  }
}

/** The pairs of a flat `name\nvalue\n...` header string (how headers cross the wasm boundary). */
export function flatHeaderPairs(flat: string): [string, string][] {
  const pairs: [string, string][] = [];
  for (let at = 0; at < flat.length;) {
    const nameEnd = flat.indexOf("\n", at);
    const valueEnd = flat.indexOf("\n", nameEnd + 1);
    if (nameEnd < 0 || valueEnd < 0) break;
    pairs.push([flat.slice(at, nameEnd), flat.slice(nameEnd + 1, valueEnd)]);
    at = valueEnd + 1;
  }
  return pairs;
}

/** Headers the client writes itself; a caller's copy of them is dropped. */
const OWN_HEADERS = new Set([
  "host",
  "content-length",
  "connection",
  "transfer-encoding",
  "keep-alive",
  "te",
  "upgrade",
]);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Options {
  /** Extra trust anchors for TLS (tests use a self-signed certificate). */
  caCerts?: string[];
}

class Connection {
  private buf = new Uint8Array(16 * 1024);
  private have = 0;
  idleSince = 0;
  closed = false;

  constructor(readonly conn: Deno.Conn) {}

  close() {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed by the peer
    }
  }

  async write(bytes: Uint8Array) {
    for (let at = 0; at < bytes.length;) at += await this.conn.write(bytes.subarray(at));
  }

  /** Reads more into the buffer; false at end of stream. */
  private async fill(): Promise<boolean> {
    if (this.have === this.buf.length) {
      const bigger = new Uint8Array(this.buf.length * 2);
      bigger.set(this.buf);
      this.buf = bigger;
    }
    const n = await this.conn.read(this.buf.subarray(this.have));
    if (n === null || n === 0) return false;
    this.have += n;
    return true;
  }

  /** Whether any byte of an answer arrived (a reused connection that failed before one may be retried). */
  received = false;

  /**
   * Nothing left over after an answer (anything else means the stream is out
   * of step). A buffer a large answer grew goes back to its first size.
   */
  get drained(): boolean {
    if (this.have !== 0) return false;
    if (this.buf.length > 64 * 1024) this.buf = new Uint8Array(16 * 1024);
    return true;
  }

  private take(n: number): Bytes {
    const out = this.buf.slice(0, n);
    this.buf.copyWithin(0, n, this.have);
    this.have -= n;
    return out;
  }

  /** One line ending in CRLF (without it), for chunk sizes and trailers. */
  private async line(): Promise<string> {
    for (;;) {
      for (let i = 1; i < this.have; i++) {
        if (this.buf[i] === 10 && this.buf[i - 1] === 13) {
          const text = decoder.decode(this.buf.subarray(0, i - 1));
          this.take(i + 1);
          return text;
        }
      }
      if (this.have > MAX_HEAD_BYTES) throw new Http1Failure("an answer line is too long", false);
      if (!await this.fill()) throw new Http1Failure("the connection closed mid-answer", false);
    }
  }

  private async exactly(n: number): Promise<Bytes> {
    while (this.have < n) {
      if (!await this.fill()) throw new Http1Failure("the connection closed mid-body", false);
    }
    return this.take(n);
  }

  /** The head of an answer: everything up to the blank line. */
  private async head(): Promise<string> {
    let from = 3;
    for (;;) {
      for (let i = from; i < this.have; i++) {
        if (this.buf[i] === 10 && this.buf[i - 1] === 13 && this.buf[i - 2] === 10 && this.buf[i - 3] === 13) {
          return decoder.decode(this.take(i + 1).subarray(0, i - 3));
        }
      }
      from = Math.max(3, this.have);
      if (this.have > MAX_HEAD_BYTES) throw new Http1Failure(`answer headers exceed ${MAX_HEAD_BYTES} bytes`, false);
      if (!await this.fill()) throw new Http1Failure("the connection closed before an answer", false);
      this.received = true;
    }
  }

  /** Reads one answer; says whether the connection may carry another request. */
  async answer(method: string): Promise<{ answer: Http1Answer; reusable: boolean }> {
    for (;;) {
      const head = await this.head();
      const lines = head.split("\r\n");
      const m = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(lines[0]);
      if (!m) throw new Http1Failure("not an HTTP/1.x answer", false);
      const status = Number(m[2]);
      let headers = "";
      let length = -1;
      let chunked = false;
      let close = m[1] === "0";
      for (let i = 1; i < lines.length; i++) {
        const colon = lines[i].indexOf(":");
        if (colon <= 0) throw new Http1Failure("a malformed answer header", false);
        const name = lines[i].slice(0, colon).trim().toLowerCase();
        const value = lines[i].slice(colon + 1).trim();
        headers += `${name}\n${value}\n`;
        if (name === "content-length") {
          if (!/^\d{1,15}$/.test(value) || (length >= 0 && Number(value) !== length)) {
            throw new Http1Failure("a malformed content-length", false);
          }
          length = Number(value);
        } else if (name === "transfer-encoding") {
          chunked = value.toLowerCase().split(",").map((s) => s.trim()).includes("chunked");
        } else if (name === "connection") {
          const tokens = value.toLowerCase().split(",").map((s) => s.trim());
          if (tokens.includes("close")) close = true;
          else if (tokens.includes("keep-alive") && m[1] === "0") close = false;
        }
      }
      // 1xx answers (100 Continue, 103 Early Hints) come before the real one.
      if (status >= 100 && status < 200 && status !== 101) continue;
      if (method === "HEAD" || status === 204 || status === 304 || status === 101) {
        return { answer: { status, headers, body: new Uint8Array() }, reusable: !close && status !== 101 };
      }
      if (chunked) {
        const parts: Uint8Array[] = [];
        let total = 0;
        for (;;) {
          const size = parseInt((await this.line()).split(";")[0].trim(), 16);
          if (!Number.isSafeInteger(size) || size < 0) throw new Http1Failure("a malformed chunk size", false);
          if (size === 0) break;
          parts.push(await this.exactly(size));
          total += size;
          if ((await this.line()) !== "") throw new Http1Failure("a chunk without its CRLF", false);
        }
        while ((await this.line()) !== "") {
          // trailers: not used
        }
        const body = new Uint8Array(total);
        let at = 0;
        for (const p of parts) {
          body.set(p, at);
          at += p.length;
        }
        return { answer: { status, headers, body }, reusable: !close };
      }
      if (length >= 0) return { answer: { status, headers, body: await this.exactly(length) }, reusable: !close };
      // No length: the body runs to the end of the connection.
      while (await this.fill()) {
        // keep reading
      }
      return { answer: { status, headers, body: this.take(this.have) }, reusable: false };
    }
  }
}

/** The client for one origin (scheme, host, port). */
export class Http1Pool {
  private idle: Connection[] = [];
  private readonly origin: string;
  private readonly host: string;
  private readonly hostname: string;
  private readonly port: number;
  private readonly tls: boolean;

  constructor(origin: string, private readonly options: Options = {}) {
    const u = new URL(origin);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(`not an http(s) origin: ${origin}`);
    this.tls = u.protocol === "https:";
    this.origin = u.origin;
    this.hostname = u.hostname.replace(/^\[|\]$/g, "");
    this.port = u.port ? Number(u.port) : this.tls ? 443 : 80;
    this.host = u.host;
  }

  /**
   * The request target (path and query) of `url` when this client may carry
   * it: the same origin, spelled as URL.origin spells it, and nothing a
   * request line cannot hold. null sends the caller to fetch.
   */
  target(url: string): string | null {
    if (!url.startsWith(this.origin) || url.charCodeAt(this.origin.length) !== 47 /* / */) return null;
    const hash = url.indexOf("#", this.origin.length);
    const target = hash < 0 ? url.slice(this.origin.length) : url.slice(this.origin.length, hash);
    for (let i = 0; i < target.length; i++) {
      const c = target.charCodeAt(i);
      if (c <= 0x20 || c >= 0x7f) return null;
    }
    return target;
  }

  /** Closes every idle connection (tests; a pool in use closes its own as they age). */
  close() {
    for (const c of this.idle.splice(0)) c.close();
  }

  private async connect(): Promise<Connection> {
    const conn = this.tls
      ? await Deno.connectTls({ hostname: this.hostname, port: this.port, caCerts: this.options.caCerts })
      : await Deno.connect({ hostname: this.hostname, port: this.port });
    if (!this.tls) (conn as Deno.TcpConn).setNoDelay(true);
    return new Connection(conn);
  }

  private takeIdle(): Connection | null {
    const now = performance.now();
    for (;;) {
      const c = this.idle.pop();
      if (!c) return null;
      if (!c.closed && now - c.idleSince < IDLE_MS) return c;
      c.close();
    }
  }

  /**
   * One exchange. `headers` is `name\nvalue\n` per header; `control.end()`
   * stops it (the connection is closed, the promise rejects). Rejects with
   * Http1Failure.
   */
  async request(
    method: string,
    target: string,
    headers: string,
    body: Uint8Array | null,
    control: Exchange,
  ): Promise<Http1Answer> {
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(method)) throw new Http1Failure(`not a method: ${method}`, false);
    let head = `${method} ${target} HTTP/1.1\r\nhost: ${this.host}\r\n`;
    for (const [name, value] of flatHeaderPairs(headers)) {
      if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name) || /[\r\n\0]/.test(value)) {
        throw new Http1Failure(`the header ${JSON.stringify(name)} cannot be sent`, false);
      }
      if (OWN_HEADERS.has(name.toLowerCase())) continue;
      head += `${name}: ${value}\r\n`;
    }
    const size = body?.length ?? 0;
    if (size > 0 || !(method === "GET" || method === "HEAD" || method === "OPTIONS" || method === "DELETE")) {
      head += `content-length: ${size}\r\n`;
    }
    head += "\r\n";
    const headBytes = encoder.encode(head);
    const bytes = size === 0 ? headBytes : new Uint8Array(headBytes.length + size);
    if (size > 0) {
      bytes.set(headBytes);
      bytes.set(body!, headBytes.length);
    }

    for (let attempt = 0;; attempt++) {
      let conn = attempt === 0 ? this.takeIdle() : null;
      const reused = conn !== null;
      try {
        if (conn === null) {
          try {
            conn = await this.connect();
          } catch (e) {
            if (control.ended) throw e;
            throw new Http1Failure(e instanceof Error ? e.message : String(e), false, e instanceof Error ? e : null);
          }
        }
        control.current = conn;
        if (control.ended) throw new Http1Failure("ended", control.timedOut);
        conn.received = false;
        await conn.write(bytes);
        const { answer, reusable } = await conn.answer(method);
        control.current = null;
        if (reusable && conn.drained && !control.ended) {
          conn.idleSince = performance.now();
          this.idle.push(conn);
          // The oldest come first: close the ones left unused too long.
          while (this.idle.length > 0 && conn.idleSince - this.idle[0].idleSince >= IDLE_MS) {
            this.idle.shift()!.close();
          }
        } else {
          conn.close();
        }
        return answer;
      } catch (e) {
        conn?.close();
        control.current = null;
        if (control.ended) {
          throw new Http1Failure(
            control.timedOut ? "the deadline passed" : "the exchange was dropped",
            control.timedOut,
          );
        }
        // The server closed a pooled connection before this request reached it.
        if (reused && !conn!.received && attempt === 0) continue;
        if (e instanceof Http1Failure) throw e;
        throw new Http1Failure(e instanceof Error ? e.message : String(e), false);
      }
    }
  }
}

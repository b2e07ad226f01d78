// The gateway's HTTP/1.1 front: it owns the public port, reads each request's
// head itself and forwards the bytes to the gateway's Deno.serve listener on a
// private loopback port.
//
// Why it exists: Deno's HTTP server refuses a head it finds too big (a URI of
// 64 KiB, a header section of about the same, more than ~120 fields) or
// malformed with a bare 400 and an empty body, before any gateway code runs.
// A client of a Supabase project gets every refusal in the envelope, so the
// front refuses those heads first, with limits below the server's: a request
// line over `maxRequestLineBytes` is 414 `uri_too_long`, a header section over
// `maxHeaderBytes` or `maxHeaderFields` is 431, anything the server would not
// parse is 400 `malformed_request`, and a head not complete within
// `headTimeoutMs` is 408 (slowloris). Whatever it lets through, the server
// parses as it did (the bytes are forwarded unchanged), so it only has to agree
// with the server on where each request ends: Content-Length or chunked, and
// anything ambiguous (both, several lengths, an unknown coding) is refused
// here, so the two can never disagree (request smuggling).
//
// The server→client direction is piped as it comes. After a 101 both
// directions are piped raw (WebSockets). The handler learns the client's
// address from the front, never from a header: each inner connection is
// registered by its local port before a byte is sent on it, and the inner
// handler maps its peer back to the front's client. A connection that did
// not come through the front has no entry and is refused.

/** Bounds of a request head and of the time a client may take to send one. */
export interface FrontLimits {
  /** Request line (method, target, version); over it: 414. */
  maxRequestLineBytes: number;
  /** Header section, also the bound of a chunked body's trailers; over it: 431. */
  maxHeaderBytes: number;
  /** Header fields; over it: 431. */
  maxHeaderFields: number;
  /** A chunk-size line with its extensions; over it the body is cut off. */
  maxChunkLineBytes: number;
  /** From a head's first byte (or the connection's start) to its end; over it: 408. */
  headTimeoutMs: number;
  /** Silence in both directions, with no request in the handler, before a keep-alive connection is closed. */
  idleTimeoutMs: number;
  /** How long a refusal waits for the answers to requests forwarded before it. */
  drainTimeoutMs: number;
  /** Client connections open at once; past it a new one gets 503. */
  maxConnections: number;
}

// Deno's server takes a head of up to about 64 KiB in all; these two sum to
// 56 KiB, so every head the front lets through is one the server parses. Both
// are far above real requests (a JWT is about 1 KiB; a presigned URL's query
// is under 1 KiB, and the gateway refuses queries over 16 KiB itself).
export const DEFAULT_LIMITS: FrontLimits = {
  maxRequestLineBytes: 32 * 1024,
  maxHeaderBytes: 24 * 1024,
  maxHeaderFields: 100,
  maxChunkLineBytes: 4 * 1024,
  headTimeoutMs: 15_000,
  idleTimeoutMs: 75_000,
  drainTimeoutMs: 5_000,
  maxConnections: 1024,
};

export type FrontHandler = (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => Response | Promise<Response>;

export interface FrontServer {
  /** The public port (useful when 0 was asked for). */
  port: number;
  /** The private port of the inner Deno.serve listener. */
  innerPort: number;
  shutdown(): Promise<void>;
}

/** One inner connection as the inner handler sees it. */
interface Link {
  peer: Deno.NetAddr;
  /** Requests the front sent on it, and those whose answer the server has written in full. */
  forwarded: number;
  answered: number;
  /** Called when every forwarded request has been answered. */
  onAnswered: (() => void) | null;
  /** Set while an upgrade request waits for its answer: true when it was 101. */
  onUpgradeAnswer: ((switched: boolean) => void) | null;
}

const addrKey = (a: Deno.NetAddr) => `${a.hostname}:${a.port}`;

/**
 * Serves `handler` behind the front on `hostname:port`. The handler's
 * `info.remoteAddr` is the front's client, never the loopback hop.
 */
export function serveWithFront(
  opts: { hostname: string; port: number; limits?: Partial<FrontLimits>; log?: (line: string) => void },
  handler: FrontHandler,
): FrontServer {
  const limits: FrontLimits = { ...DEFAULT_LIMITS, ...opts.limits };
  const log = opts.log ?? ((line: string) => console.log(line));
  const links = new Map<string, Link>();

  const inner = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req, info) => {
    const link = links.get(addrKey(info.remoteAddr as Deno.NetAddr));
    if (!link) {
      return envelopeResponse(403, "not_through_gateway", "connect to the gateway's public port");
    }
    // `completed` settles once the answer is written in full: only then may
    // the front end the connection's input (the server drops an answer still
    // being made when its input ends) or write a refusal of its own after it.
    const answered = () => {
      if (++link.answered >= link.forwarded) link.onAnswered?.();
    };
    info.completed.then(answered, answered);
    const upgrading = req.headers.has("upgrade");
    let switched = false;
    try {
      const resp = await handler(req, { remoteAddr: link.peer, completed: info.completed });
      switched = resp.status === 101;
      return resp;
    } finally {
      if (upgrading && link.onUpgradeAnswer) link.onUpgradeAnswer(switched);
    }
  });
  const innerPort = inner.addr.port;

  const listener = Deno.listen({ hostname: opts.hostname, port: opts.port });
  const open = new Set<ClientConnection>();
  const accepting = (async () => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        return; // listener closed
      }
      const c = new ClientConnection(conn, innerPort, links, limits, log);
      if (open.size >= limits.maxConnections) {
        c.refuse(503, "too_many_connections", `the gateway holds ${limits.maxConnections} connections already`);
        continue;
      }
      open.add(c);
      c.run().finally(() => open.delete(c));
    }
  })();

  return {
    port: (listener.addr as Deno.NetAddr).port,
    innerPort,
    async shutdown() {
      listener.close();
      await accepting;
      for (const c of open) c.closeAll();
      await inner.shutdown();
    },
  };
}

function envelopeBody(code: string, message: string, details: unknown): string {
  return JSON.stringify({ success: false, error: { code, message, details }, request_id: crypto.randomUUID() });
}

function envelopeResponse(status: number, code: string, message: string): Response {
  return new Response(envelopeBody(code, message, null), {
    status,
    headers: { "content-type": "application/json", "access-control-allow-origin": "*" },
  });
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  408: "Request Timeout",
  414: "URI Too Long",
  431: "Request Header Fields Too Large",
  503: "Service Unavailable",
};

/** A refusal the front answers itself. */
class Refusal {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly message: string,
    readonly details: unknown = null,
  ) {}
}

const malformed = (what: string) => new Refusal(400, "malformed_request", `malformed request: ${what}`);

/** What the front needs from a head: where the request ends and what follows it. */
interface Head {
  method: string;
  target: string;
  body: { kind: "none" } | { kind: "length"; bytes: number } | { kind: "chunked" };
  /** No request may follow this one on the connection. */
  last: boolean;
  upgrade: boolean;
}

const CR = 13, LF = 10, SP = 32, HT = 9, COLON = 58;

// RFC 9110 tchar: the bytes of a method or a field name.
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let b = 0x30; b <= 0x39; b++) TCHAR[b] = 1;
for (let b = 0x41; b <= 0x5a; b++) TCHAR[b] = 1;
for (let b = 0x61; b <= 0x7a; b++) TCHAR[b] = 1;

const latin1 = (b: Uint8Array, from: number, to: number) => String.fromCharCode(...b.subarray(from, to));

/** Index of the LF ending the head that starts at `from` (CRLF CRLF), or -1. `scanFrom` skips what was searched. */
function headEnd(b: Uint8Array, from: number, scanFrom: number, to: number): number {
  for (let i = Math.max(from + 3, scanFrom); i < to; i++) {
    if (b[i] === LF && b[i - 1] === CR && b[i - 2] === LF && b[i - 3] === CR) return i;
  }
  return -1;
}

function indexOfCrlf(b: Uint8Array, from: number, to: number): number {
  for (let i = from; i + 1 < to; i++) if (b[i] === CR && b[i + 1] === LF) return i;
  return -1;
}

function lowerAscii(b: Uint8Array, from: number, to: number): string {
  return latin1(b, from, to).toLowerCase();
}

/** Parses the head in b[from, end] (end: the final LF). Bounds were checked by the caller. */
function parseHead(b: Uint8Array, from: number, end: number, limits: FrontLimits): Head | Refusal {
  // Bare CR or LF anywhere: the server would take a lone LF as a line end; the
  // front does not, so it refuses rather than disagree on where lines end.
  for (let i = from; i <= end; i++) {
    if (b[i] === LF && (i === from || b[i - 1] !== CR)) return malformed("a line ends in a bare LF");
    if (b[i] === CR && b[i + 1] !== LF) return malformed("a bare CR");
  }
  const lineEnd = indexOfCrlf(b, from, end + 1);
  // Request line: method SP target SP version, single spaces.
  let i = from;
  while (i < lineEnd && TCHAR[b[i]]) i++;
  if (i === from || b[i] !== SP) return malformed("the method");
  const method = latin1(b, from, i);
  const targetStart = ++i;
  while (i < lineEnd && b[i] > 0x20 && b[i] < 0x7f) i++;
  if (i === targetStart || b[i] !== SP) return malformed("the request target");
  const target = latin1(b, targetStart, i);
  const version = latin1(b, i + 1, lineEnd);
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") return malformed(`version ${JSON.stringify(version)}`);
  const upper = method.toUpperCase();
  const targetOk = target[0] === "/" || /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(target) ||
    (target === "*" && upper === "OPTIONS") || (upper === "CONNECT" && /^[^/?#]+:\d+$/.test(target));
  if (!targetOk) return malformed("the request target");

  let fields = 0;
  const lengths: string[] = [];
  let transferEncoding: string | null = null;
  let connection = "";
  let upgrade = false;
  for (let ls = lineEnd + 2; ls < end - 1;) {
    const le = indexOfCrlf(b, ls, end + 1);
    if (++fields > limits.maxHeaderFields) {
      return new Refusal(431, "header_fields_too_many", `more than ${limits.maxHeaderFields} header fields`, {
        limit: limits.maxHeaderFields,
      });
    }
    if (b[ls] === SP || b[ls] === HT) return malformed("a folded header line");
    let c = ls;
    while (c < le && TCHAR[b[c]]) c++;
    if (c === ls || b[c] !== COLON) return malformed("a header name");
    for (let v = c + 1; v < le; v++) {
      const x = b[v];
      if ((x < 0x20 && x !== HT) || x === 0x7f) return malformed("a control character in a header value");
    }
    const nameLen = c - ls;
    if (nameLen === 14 || nameLen === 17 || nameLen === 10 || nameLen === 7) {
      const name = lowerAscii(b, ls, c);
      const value = () => latin1(b, c + 1, le).trim();
      if (name === "content-length") lengths.push(value());
      else if (name === "transfer-encoding") {
        transferEncoding = transferEncoding === null ? value() : `${transferEncoding},${value()}`;
      } else if (name === "connection") connection += "," + value().toLowerCase();
      else if (name === "upgrade") upgrade = true;
    }
    ls = le + 2;
  }

  let body: Head["body"] = { kind: "none" };
  if (transferEncoding !== null) {
    if (lengths.length > 0) return malformed("both Content-Length and Transfer-Encoding");
    if (version === "HTTP/1.0") return malformed("Transfer-Encoding in HTTP/1.0");
    const codings = transferEncoding.split(",").map((s) => s.trim().toLowerCase()).filter((s) => s !== "");
    if (codings.at(-1) !== "chunked") return malformed("a Transfer-Encoding that does not end in chunked");
    body = { kind: "chunked" };
  } else if (lengths.length > 1) {
    return malformed("more than one Content-Length");
  } else if (lengths.length === 1) {
    if (!/^\d{1,15}$/.test(lengths[0])) return malformed("the Content-Length");
    const bytes = Number(lengths[0]);
    if (bytes > 0) body = { kind: "length", bytes };
  }
  const tokens = connection.split(",").map((s) => s.trim());
  const last = tokens.includes("close") || (version === "HTTP/1.0" && !tokens.includes("keep-alive"));
  return { method, target, body, last, upgrade };
}

const TIMEOUT = Symbol("timeout");
const EOF = Symbol("eof");

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** One client connection: the client→server parser, the server→client pipe, the timers. */
class ClientConnection {
  private readonly buf: Uint8Array;
  private start = 0; // first byte not yet consumed
  private end = 0; // one past the last byte read
  private pendingRead: Promise<number | null> | null = null;
  private inner: Deno.TcpConn | null = null;
  private link: Link | null = null;
  private linkKey = "";
  private pump: Promise<void> = Promise.resolve();
  private refusing = false;
  private closed = false;
  private requests = 0;
  private lastServerByte = 0;
  // One timer per connection, re-armed lazily: moving a deadline later costs nothing.
  private deadline = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt = 0;
  // The deadline passed: the read waiting now (or the next one) ends with TIMEOUT.
  private expired = false;
  private wake: ((t: typeof TIMEOUT) => void) | null = null;

  constructor(
    private readonly client: Deno.TcpConn,
    private readonly innerPort: number,
    private readonly links: Map<string, Link>,
    private readonly limits: FrontLimits,
    private readonly log: (line: string) => void,
  ) {
    this.buf = new Uint8Array(limits.maxRequestLineBytes + limits.maxHeaderBytes + 16 * 1024);
    try {
      client.setNoDelay(true);
    } catch { /* already gone */ }
  }

  private setDeadline(ms: number) {
    this.expired = false;
    this.deadline = Date.now() + ms;
    if (this.timer !== undefined && this.timerAt <= this.deadline) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = this.deadline;
    this.timer = setTimeout(this.onTimer, ms);
  }

  private onTimer = () => {
    this.timer = undefined;
    const left = this.deadline - Date.now();
    if (left > 0) {
      this.timerAt = this.deadline;
      this.timer = setTimeout(this.onTimer, left);
      return;
    }
    this.expired = true;
    const wake = this.wake;
    this.wake = null;
    wake?.(TIMEOUT);
  };

  private clearDeadline() {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Reads more client bytes into buf[end..]; EOF on end of stream or error, TIMEOUT when the deadline passed. */
  private async fill(): Promise<number | typeof EOF | typeof TIMEOUT> {
    // Nothing moves while a read is pending: it lands at `end`.
    if (this.pendingRead) { /* reuse it */ }
    else if (this.start === this.end) this.start = this.end = 0;
    else if (this.end === this.buf.length) {
      this.buf.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    if (this.expired) {
      this.expired = false;
      return TIMEOUT;
    }
    const read = this.pendingRead ??= this.client.read(this.buf.subarray(this.end)).catch(() => null);
    // Not Promise.race against one long-lived timeout promise: that would keep
    // a reaction per read until the connection ends.
    const r = await new Promise<number | null | typeof TIMEOUT>((resolve) => {
      this.wake = resolve;
      read.then(resolve);
    });
    this.wake = null;
    if (r === TIMEOUT) {
      this.expired = false;
      return TIMEOUT;
    }
    this.pendingRead = null;
    if (r === null) return EOF;
    this.end += r;
    return r;
  }

  /** Sends the consumed bytes buf[start, upTo) to the inner server. */
  private async forward(upTo: number): Promise<void> {
    if (upTo > this.start) {
      await writeAll(this.inner!, this.buf.subarray(this.start, upTo));
      this.start = upTo;
    }
  }

  /** Resolves when both directions are done. */
  async run(): Promise<void> {
    try {
      await this.serve();
    } catch {
      this.closeAll();
    }
    await this.pump;
  }

  private async serve(): Promise<void> {
    for (;;) {
      // Head: from the connection's start or the previous request's end.
      const first = this.requests === 0;
      let headStarted = this.start < this.end || first;
      this.setDeadline(headStarted ? this.limits.headTimeoutMs : this.limits.idleTimeoutMs);
      let scanned = 0; // bytes of this head already searched (fill() may move the head)
      let endLf = -1;
      for (;;) {
        endLf = headEnd(this.buf, this.start, this.start + scanned, this.end);
        if (endLf >= 0) break;
        scanned = this.end - this.start;
        const tooBig = this.headBoundsExceeded(this.start, this.end, false);
        if (tooBig) return await this.refuseAfterDrain(tooBig);
        const r = await this.fill();
        if (r === EOF) return await this.endOfRequests();
        if (r === TIMEOUT) {
          if (headStarted) {
            return await this.refuseAfterDrain(
              new Refusal(408, "request_timeout", `the request head took over ${this.limits.headTimeoutMs} ms`),
            );
          }
          // Idle between requests: still busy while an answer is being made or sent.
          const waiting = this.link !== null && this.link.answered < this.link.forwarded;
          const busySince = Math.max(this.lastServerByte, waiting ? Date.now() : 0);
          if (Date.now() - busySince < this.limits.idleTimeoutMs) {
            this.setDeadline(this.limits.idleTimeoutMs - (Date.now() - busySince));
            continue;
          }
          return this.closeAll();
        }
        if (!headStarted) {
          headStarted = true;
          this.setDeadline(this.limits.headTimeoutMs);
        }
      }
      const tooBig = this.headBoundsExceeded(this.start, endLf + 1, true);
      if (tooBig) return await this.refuseAfterDrain(tooBig);
      const head = parseHead(this.buf, this.start, endLf, this.limits);
      if (head instanceof Refusal) return await this.refuseAfterDrain(head);
      this.requests++;
      if (!this.inner) await this.connectInner();
      // Listening for the answer before the request goes out: the handler may answer at once.
      const switched = head.upgrade ? this.upgradeAnswer() : null;
      this.link!.forwarded++;
      await this.forward(endLf + 1);
      this.setDeadline(this.limits.idleTimeoutMs);

      const body = head.body.kind === "chunked"
        ? await this.forwardChunked()
        : head.body.kind === "length"
        ? await this.forwardLength(head.body.bytes)
        : "ok";
      if (body === "timeout") return this.closeAll();
      if (body !== "ok") {
        // The server has part of a body: end its input there, so its own
        // parser answers (the gateway's 400 body_incomplete); the pipe closes
        // the connection after that answer.
        this.clearDeadline();
        return void this.inner!.closeWrite().catch(() => this.closeAll());
      }
      if (switched) {
        this.clearDeadline();
        if (await switched) return await this.pipeRaw();
        if (this.closed) return;
      }
      if (head.last) return await this.endOfRequests();
    }
  }

  /** The bound a partial or complete head in buf[from, to) breaks, if any. */
  private headBoundsExceeded(from: number, to: number, complete: boolean): Refusal | null {
    const line = indexOfCrlf(this.buf, from, to);
    const lineBytes = line < 0 ? to - from : line - from;
    // An unfinished line may end in the CR of its CRLF.
    if (lineBytes > this.limits.maxRequestLineBytes + (line < 0 && !complete ? 1 : 0)) {
      return new Refusal(
        414,
        "uri_too_long",
        `the request line is over ${this.limits.maxRequestLineBytes} bytes`,
        { limit_bytes: this.limits.maxRequestLineBytes },
      );
    }
    if (line >= 0 && to - (line + 2) > this.limits.maxHeaderBytes) {
      return new Refusal(
        431,
        "header_fields_too_large",
        `the header section is over ${this.limits.maxHeaderBytes} bytes`,
        { limit_bytes: this.limits.maxHeaderBytes },
      );
    }
    return null;
  }

  /** A body read: EOF ends the body short, a client silent for the idle timeout is given up on. */
  private async fillBody(): Promise<"ok" | "eof" | "timeout"> {
    const r = await this.fill();
    if (r === EOF) return "eof";
    if (r === TIMEOUT) return "timeout";
    this.setDeadline(this.limits.idleTimeoutMs);
    return "ok";
  }

  private async forwardLength(bytes: number): Promise<"ok" | "eof" | "timeout"> {
    let left = bytes;
    for (;;) {
      const take = Math.min(left, this.end - this.start);
      await this.forward(this.start + take);
      left -= take;
      if (left === 0) return "ok";
      const r = await this.fillBody();
      if (r !== "ok") return r;
    }
  }

  /** Forwards a chunked body up to and including its trailers' empty line. */
  private async forwardChunked(): Promise<"ok" | "eof" | "timeout" | "malformed"> {
    let trailerBytes = 0;
    let inTrailers = false;
    for (;;) {
      // A line: a chunk size, a trailer field, or the empty line ending the body.
      const le = indexOfCrlf(this.buf, this.start, this.end);
      if (le < 0) {
        const bound = inTrailers ? this.limits.maxHeaderBytes - trailerBytes : this.limits.maxChunkLineBytes;
        if (this.end - this.start > bound) return "malformed";
        const r = await this.fillBody();
        if (r !== "ok") return r;
        continue;
      }
      if (inTrailers) {
        trailerBytes += le + 2 - this.start;
        if (trailerBytes > this.limits.maxHeaderBytes) return "malformed";
        const empty = le === this.start;
        await this.forward(le + 2);
        if (empty) return "ok";
        continue;
      }
      let i = this.start;
      let size = 0;
      while (i < le && i - this.start < 13) {
        const d = hexDigit(this.buf[i]);
        if (d < 0) break;
        size = size * 16 + d;
        i++;
      }
      if (i === this.start || (i < le && this.buf[i] !== 0x3b /* ; */ && this.buf[i] !== SP && this.buf[i] !== HT)) {
        return "malformed";
      }
      for (let x = i; x < le; x++) {
        if ((this.buf[x] < 0x20 && this.buf[x] !== HT) || this.buf[x] === 0x7f) return "malformed";
      }
      await this.forward(le + 2);
      if (size === 0) {
        inTrailers = true;
        continue;
      }
      // The chunk's data and its CRLF.
      const dataEnd = await this.forwardLength(size);
      if (dataEnd !== "ok") return dataEnd;
      while (this.end - this.start < 2) {
        const r = await this.fillBody();
        if (r !== "ok") return r;
      }
      if (this.buf[this.start] !== CR || this.buf[this.start + 1] !== LF) return "malformed";
      await this.forward(this.start + 2);
    }
  }

  private async connectInner(): Promise<void> {
    const inner = await Deno.connect({ hostname: "127.0.0.1", port: this.innerPort });
    inner.setNoDelay(true);
    this.inner = inner;
    // Registered before the first byte goes out, so the handler always finds it.
    this.linkKey = addrKey(inner.localAddr);
    this.link = { peer: this.client.remoteAddr, forwarded: 0, answered: 0, onAnswered: null, onUpgradeAnswer: null };
    this.links.set(this.linkKey, this.link);
    this.pump = this.pipeServerToClient(inner);
  }

  private async pipeServerToClient(inner: Deno.TcpConn): Promise<void> {
    const b = new Uint8Array(32 * 1024);
    try {
      for (;;) {
        const n = await inner.read(b);
        if (n === null) break;
        this.lastServerByte = Date.now();
        await writeAll(this.client, b.subarray(0, n));
      }
    } catch { /* either side went away */ }
    this.link?.onUpgradeAnswer?.(false);
    // The server closed: unless a refusal is waiting to be written after its answers, the connection is done.
    if (!this.refusing) this.closeAll();
  }

  /** The handler's answer to an upgrade request: true when it switched protocols. */
  private upgradeAnswer(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.link!.onUpgradeAnswer = (switched) => {
        this.link!.onUpgradeAnswer = null;
        resolve(switched);
      };
    });
  }

  /** After a 101: client bytes go to the server as they come, with no parsing and no timers. */
  private async pipeRaw(): Promise<void> {
    try {
      await this.forward(this.end);
      if (this.pendingRead) {
        // A read left behind by a timer race lands at `end`.
        const n = await this.pendingRead;
        this.pendingRead = null;
        if (n !== null) await writeAll(this.inner!, this.buf.subarray(this.end, this.end + n));
      }
      for (;;) {
        const n = await this.client.read(this.buf);
        if (n === null) break;
        await writeAll(this.inner!, this.buf.subarray(0, n));
      }
      await this.inner!.closeWrite().catch(() => {});
    } catch {
      this.closeAll();
    }
  }

  /** Resolves when every forwarded request has been answered in full (or the connection closed). */
  private allAnswered(): Promise<void> {
    const link = this.link;
    if (!link || this.closed || link.answered >= link.forwarded) return Promise.resolve();
    return new Promise((resolve) => {
      link.onAnswered = () => {
        link.onAnswered = null;
        resolve();
      };
    });
  }

  /**
   * No more requests on this connection (the client finished sending, or said
   * Connection: close): once the server has answered everything, its input
   * ends, it closes, and the pipe closes the client's connection after it.
   */
  private async endOfRequests(): Promise<void> {
    this.clearDeadline();
    if (!this.inner) return this.closeAll();
    await this.allAnswered();
    await this.inner.closeWrite().catch(() => this.closeAll());
  }

  /** Answers a refusal after the answers to the requests forwarded before it, then closes. */
  private async refuseAfterDrain(r: Refusal): Promise<void> {
    this.clearDeadline();
    this.refusing = true;
    if (this.inner) {
      await this.allAnswered();
      try {
        await this.inner.closeWrite();
      } catch { /* already closed */ }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.pump, new Promise((res) => timer = setTimeout(res, this.limits.drainTimeoutMs))]);
      clearTimeout(timer);
    }
    await this.refuse(r.status, r.code, r.message, r.details, this.describe());
  }

  /** Method and path of the refused head, for the log line, when they can be read. */
  private describe(): string {
    const line = latin1(this.buf, this.start, Math.min(this.end, this.start + 200)).split("\r\n")[0];
    const [method, target] = line.split(" ");
    return `${/^[A-Za-z]+$/.test(method ?? "") ? method : "-"} ${(target ?? "-").split("?")[0]}`;
  }

  /** Writes a refusal with Connection: close, then closes the way clients can read it. */
  async refuse(status: number, code: string, message: string, details: unknown = null, what = "- -"): Promise<void> {
    const body = new TextEncoder().encode(envelopeBody(code, message, details));
    const head = `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}\r\ncontent-type: application/json\r\n` +
      `content-length: ${body.length}\r\naccess-control-allow-origin: *\r\nconnection: close\r\n\r\n`;
    this.log(`${what} ${status} 0ms`);
    try {
      await writeAll(this.client, new Uint8Array([...new TextEncoder().encode(head), ...body]));
      // Lingering close: closing with unread client bytes would reset the
      // connection and could destroy the answer before the client reads it.
      await this.client.closeWrite();
      const deadline = Date.now() + 1000;
      let discarded = 0;
      const scratch = new Uint8Array(16 * 1024);
      while (Date.now() < deadline && discarded < 1024 * 1024) {
        let t: ReturnType<typeof setTimeout> | undefined;
        const n = await Promise.race([
          this.pendingRead ?? this.client.read(scratch),
          new Promise<null>((res) => t = setTimeout(() => res(null), deadline - Date.now())),
        ]);
        clearTimeout(t);
        this.pendingRead = null;
        if (n === null) break;
        discarded += n;
      }
    } catch { /* the client went away */ }
    this.closeAll();
  }

  closeAll(): void {
    if (this.closed) return;
    this.closed = true;
    this.clearDeadline();
    this.link?.onUpgradeAnswer?.(false);
    this.link?.onAnswered?.();
    // Unregistered before the socket closes: while it is open its port is
    // ours, so no other connection can ever be mistaken for this client.
    if (this.linkKey) this.links.delete(this.linkKey);
    for (const c of [this.inner, this.client]) {
      try {
        c?.close();
      } catch { /* already closed */ }
    }
  }
}

function hexDigit(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x61 + 10;
  if (b >= 0x41 && b <= 0x46) return b - 0x41 + 10;
  return -1;
}

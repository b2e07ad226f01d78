// The one wasm loader. Reads the module's bytes from the function bundle with
// Deno.readFile (never fetch: the edge runtime does not serve the bundle over
// HTTP) and instantiates it synchronously through wasm-bindgen's initSync.

/**
 * Bytes backed by a plain ArrayBuffer (what Response bodies and the wasm glue
 * take). Spelled through `slice`'s return type rather than
 * `Uint8Array<ArrayBuffer>`: the hosted runtime's Deno 2.1 ships TypeScript
 * 5.6, where Uint8Array is not generic, and the bundle must type-check there.
 */
export type Bytes = ReturnType<Uint8Array["slice"]>;

/** What `wasm-bindgen --target web --experimental-reset-state-function` emits. */
export interface WasmGlue {
  initSync(module: { module: BufferSource | WebAssembly.Module }): unknown;
  /**
   * The request as arguments (no object to build and read back): `request` is
   * `method\nurl\n` followed by the headers flat (see WasmRequest), one string
   * into wasm memory instead of three; the reply itself when Rust answers
   * without waiting (a preflight, 405, 413), else a promise of it. See
   * crates/runtime/src/serve.rs.
   */
  handle(request: string, body: Bytes | null, env: Record<string, string>): WasmReply | Promise<WasmReply>;
  __wbg_reset_state(): void;
}

export interface WasmRequest {
  method: string;
  url: string;
  /**
   * Every header as `name\nvalue\n`: one string crosses into the wasm instead of
   * two per header (no header can hold a line break). See crates/runtime/src/convert.rs.
   */
  headers: string;
  body: Bytes | null;
}

/**
 * What the wasm answers (crates/runtime/src/convert.rs `reply_to_js`). A
 * buffered reply whose body is empty or a small UTF-8 one with a content type
 * is one string: `status\n`, the headers flat as in WasmRequest, `\r` (which no
 * flat header holds), then the body. Anything else is one array: status,
 * headers flat (or pairs when one could not be flattened), the body (bytes;
 * null when streamed or upgraded), then a stream or a socket handle when
 * there is one.
 */
export type WasmReply = string | WasmReplyParts;

/** A reply in the array form (see WasmReply). */
export type WasmReplyParts = [
  status: number,
  headers: string | [string, string][],
  body: Bytes | string | null,
  stream?: WasmStream,
  socket?: WasmSocket,
];

/** A reply's headers as pairs. */
export function replyHeaders(headers: string | [string, string][]): [string, string][] {
  if (typeof headers !== "string") return headers;
  const parts = headers.split("\n");
  const pairs: [string, string][] = [];
  for (let i = 0; i + 1 < parts.length; i += 2) pairs.push([parts[i], parts[i + 1]]);
  return pairs;
}

export interface WasmResponse {
  status: number;
  headers: [string, string][];
  /** null when the body is streamed or the request upgraded. */
  body: Bytes | null;
  /** A body produced by Rust chunk by chunk. */
  stream?: WasmStream;
  /** A WebSocket session (status 101). */
  socket?: WasmSocket;
}

/** A streamed body: pull with next() until undefined; cancel() stops the producer. */
export interface WasmStream {
  next(): Promise<Bytes | undefined>;
  cancel(): void;
  free(): void;
}

/** A WebSocket session run by Rust. */
export interface WasmSocket {
  start(send: (data: string | Bytes) => void, close: (code: number, reason: string) => void): Promise<void>;
  message(data: string | Bytes): void;
  closed(code: number, reason: string): void;
  free(): void;
}

/** A wasm function instance that can be rebuilt after a trap. */
export class WasmFunction {
  #glue: WasmGlue;
  #wasmUrl: URL;
  #ready: Promise<void> | null = null;

  constructor(glue: WasmGlue, wasmUrl: URL) {
    this.#glue = glue;
    this.#wasmUrl = wasmUrl;
  }

  #loaded = false;

  /** Whether the module is instantiated (then a request need not wait on `ready`). */
  get loaded(): boolean {
    return this.#loaded;
  }

  /** Loads the module once; later calls reuse it. */
  ready(): Promise<void> {
    if (!this.#ready) {
      this.#ready = (async () => {
        const bytes = await Deno.readFile(this.#wasmUrl);
        const module = new WebAssembly.Module(bytes);
        this.#glue.initSync({ module });
        this.#loaded = true;
      })();
      // A failed load must be retried on the next request, not cached.
      this.#ready.catch(() => (this.#ready = null));
    }
    return this.#ready;
  }

  /** One request (`method\nurl\n` and the headers flat, see WasmGlue): the reply, or a promise of it. */
  handle(request: string, body: Bytes | null, env: Record<string, string>): WasmReply | Promise<WasmReply> {
    return this.#glue.handle(request, body, env);
  }

  /** Throws away the trapped instance's state and instantiates afresh. */
  reset(): void {
    this.#glue.__wbg_reset_state();
  }
}

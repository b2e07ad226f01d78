// A request body passed through chunk by chunk by the local gateway, with a
// note of whether reading it from the client failed. A body shorter than its
// Content-Length ends that way (the client closes or resets), and so does a
// connection cut mid-upload: the caller answers 400 for it instead of
// blaming the upstream, which only saw its own request fail.

export interface WatchedBody {
  stream: ReadableStream<Uint8Array> | null;
  /** True once reading the client's body has failed. */
  failed: () => boolean;
}

export function watchedBody(body: ReadableStream<Uint8Array> | null): WatchedBody {
  if (!body) return { stream: null, failed: () => false };
  let failed = false;
  const reader = body.getReader();
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const r = await reader.read();
        if (r.done) controller.close();
        else controller.enqueue(r.value);
      } catch (e) {
        failed = true;
        controller.error(e);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return { stream, failed: () => failed };
}

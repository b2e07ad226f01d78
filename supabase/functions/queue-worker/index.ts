// queue-worker: seed 000's chat job queue (Rust, in ./pkg).
import * as glue from "./pkg/queue_worker.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("queue-worker", glue, new URL("./pkg/queue_worker_bg.wasm", import.meta.url));

// queue-job: media (Rust, in ./pkg).
import * as glue from "./pkg/queue_job.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("queue-job", glue, new URL("./pkg/queue_job_bg.wasm", import.meta.url));

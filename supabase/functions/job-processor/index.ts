// job-processor: pipelines (Rust, in ./pkg).
import * as glue from "./pkg/job_processor.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("job-processor", glue, new URL("./pkg/job_processor_bg.wasm", import.meta.url));

// job-callback: media (Rust, in ./pkg).
import * as glue from "./pkg/job_callback.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("job-callback", glue, new URL("./pkg/job_callback_bg.wasm", import.meta.url));

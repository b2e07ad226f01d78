// progress-tracker: seed 004's upload pipeline (Rust, in ./pkg).
import * as glue from "./pkg/progress_tracker.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("progress-tracker", glue, new URL("./pkg/progress_tracker_bg.wasm", import.meta.url));

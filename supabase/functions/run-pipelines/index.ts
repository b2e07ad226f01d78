// run-pipelines: pipelines (Rust, in ./pkg).
import * as glue from "./pkg/run_pipelines.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("run-pipelines", glue, new URL("./pkg/run_pipelines_bg.wasm", import.meta.url));

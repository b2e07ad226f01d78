// health: build identity and a timed PostgREST round trip (Rust, in ./pkg).
import * as glue from "./pkg/health.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("health", glue, new URL("./pkg/health_bg.wasm", import.meta.url));

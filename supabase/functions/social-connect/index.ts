// social-connect: pipelines (Rust, in ./pkg).
import * as glue from "./pkg/social_connect.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("social-connect", glue, new URL("./pkg/social_connect_bg.wasm", import.meta.url));

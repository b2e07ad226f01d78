// generate-admin-image: media (Rust, in ./pkg).
import * as glue from "./pkg/generate_admin_image.js";
import { serveWasm } from "../_shared/serve.ts";

serveWasm("generate-admin-image", glue, new URL("./pkg/generate_admin_image_bg.wasm", import.meta.url));

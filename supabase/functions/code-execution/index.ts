// code-execution: untrusted JavaScript, TypeScript and Python in a wasm sandbox
// (Rust in ./pkg; the interpreters in ./sandbox, run by ../_shared/sandbox.ts).
import * as glue from "./pkg/code_execution.js";
import { serveWasm } from "../_shared/serve.ts";
import { installSandbox } from "../_shared/sandbox.ts";

installSandbox(new URL("./sandbox/", import.meta.url));
serveWasm("code-execution", glue, new URL("./pkg/code_execution_bg.wasm", import.meta.url));

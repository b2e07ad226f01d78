//! Python in a sandbox.
//!
//! RustPython's compiler and VM, built without its standard library and without its
//! `host_env` feature: no `os`, `posix`, `socket` or file access exist in the module,
//! and the module imports nothing from its host, so no Python code can reach one.
//! `print` and `sys.stdout`/`sys.stderr` write to the sandbox's own bounded buffers,
//! `input()` and `sys.stdin` read the request's stdin, `time` answers with the coarse
//! clock the host passes in (whole seconds). Runaways are stopped by the fuel pass,
//! memory bombs by the memory ceiling; `MemoryError` raised by the VM itself (or the
//! OverflowError RustPython raises where CPython raises MemoryError) counts as reaching
//! the ceiling.
//!
//! A limit of RustPython on 32-bit wasm: reference counts have 15 bits, so more than
//! 32767 live references to one object (every object refers to its type: 32767 live
//! ints) abort the interpreter. The runner reports that abort as an error.
#![deny(missing_docs)]

use edgeworks_sandbox_guest::{mark_out_of_memory, next_random, write, Outcome, Stream};
use rustpython_vm::builtins::PyStrRef;
use rustpython_vm::compiler::Mode;
use rustpython_vm::scope::Scope;
use rustpython_vm::{AsObject, Interpreter, PyObjectRef, PyResult, Settings, VirtualMachine};

/// The file name tracebacks give the script.
const SCRIPT_NAME: &str = "<main>";

/// Runs before the script in its own namespace: wires stdio to the sandbox, replaces
/// the clock with a coarse one, removes what would only fail (`open`), and defines
/// how results and errors are rendered.
const PRELUDE: &str = include_str!("prelude.py");

/// Compiles and runs `code` once and reports how it ended.
pub fn run(code: &str, stdin: &str, now_ms: f64, _flags: u32) -> Outcome {
    let mut settings = Settings::default();
    settings.hash_seed = Some(next_random() as u32);
    settings.isolated = true;
    settings.ignore_environment = true;
    settings.import_site = false;
    settings.safe_path = true;
    settings.write_bytecode = false;
    let interpreter = Interpreter::without_stdlib(settings);
    let now_s = if now_ms.is_finite() && now_ms > 0.0 {
        (now_ms / 1000.0).floor()
    } else {
        0.0
    };
    interpreter.enter(|vm| match run_in(vm, code, stdin, now_s) {
        Ok(outcome) => outcome,
        Err(exc) => Outcome::Error {
            message: format!("InternalError: {}", exception_text(vm, &exc.into())),
            line: None,
        },
    })
}

fn run_in(vm: &VirtualMachine, code: &str, stdin: &str, now_s: f64) -> PyResult<Outcome> {
    let system = vm.new_scope_with_builtins();
    let g = &system.globals;
    g.set_item(
        "_write_stdout",
        vm.new_function("_write_stdout", |s: PyStrRef| {
            write(Stream::Stdout, s.to_string_lossy().as_bytes())
        })
        .into(),
        vm,
    )?;
    g.set_item(
        "_write_stderr",
        vm.new_function("_write_stderr", |s: PyStrRef| {
            write(Stream::Stderr, s.to_string_lossy().as_bytes())
        })
        .into(),
        vm,
    )?;
    g.set_item("_stdin_text", vm.ctx.new_str(stdin).into(), vm)?;
    g.set_item("_now", vm.ctx.new_float(now_s).into(), vm)?;
    vm.run_string(system.clone(), PRELUDE, "<prelude>".to_owned())?;

    let main = vm.new_scope_with_main()?;
    let result = match vm.compile(code, Mode::BlockExpr, SCRIPT_NAME.to_owned()) {
        Ok(compiled) => vm.run_code_obj(compiled, Scope::with_builtins(None, main.globals, vm)),
        Err(err) => Err(vm.new_syntax_error(&err, Some(code))),
    };
    let describe = system.globals.get_item("_describe", vm)?;
    let render = system.globals.get_item("_render", vm)?;
    Ok(match result {
        Ok(value) if vm.is_none(&value) => Outcome::Ok(None),
        Ok(value) => {
            let text = render.call((value,), vm)?;
            Outcome::Ok(Some(text.str(vm)?.to_string_lossy().into_owned()))
        }
        Err(exc) => {
            let described = describe.call((exc,), vm)?;
            if described.get_item(&2, vm)?.try_to_bool(vm)? {
                mark_out_of_memory();
            }
            let message = described.get_item(&0, vm)?.str(vm)?.to_string_lossy().into_owned();
            let line: i64 = described.get_item(&1, vm)?.try_into_value(vm)?;
            Outcome::Error {
                message,
                line: u32::try_from(line).ok().filter(|l| *l > 0),
            }
        }
    })
}

fn exception_text(vm: &VirtualMachine, exc: &PyObjectRef) -> String {
    match exc.str(vm) {
        Ok(s) => format!("{}: {}", exc.class().name(), s.to_string_lossy()),
        Err(_) => exc.class().name().to_string(),
    }
}

edgeworks_sandbox_guest::sandbox_exports!(run);

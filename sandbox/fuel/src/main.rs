//! `sandbox-fuel IN.wasm OUT.wasm --language L --max-memory-mib N [--meter-calls] [--keep-names]`
//!
//! Makes an interpreter module stoppable from outside without any cooperation from the
//! interpreter: every loop header in every function (and, with `--meter-calls`, every
//! function entry) spends one unit of an exported mutable i64 global `fuel` and traps
//! (`unreachable`) once it is below zero. The host sets `fuel` before each run; a trap
//! with `fuel < 0` is a timeout. Every path that can run forever in a wasm function goes
//! through a loop header or a call, so regex backtracking, sort comparators and native
//! callbacks are covered as well as the interpreter's dispatch loop.
//!
//! Metering calls too narrows how much CPU one unit stands for: with loop headers alone,
//! a bigint sum spends one unit per ~70 ns and an empty loop one per ~10 ns (a 7x spread
//! in what a budget means); with calls, every measured shape lies within ~3x.
//!
//! The pass also turns the module's memory into its only import (`sandbox.memory`, with
//! the ceiling as its maximum: `memory.grow` fails above it, the guest's allocator
//! notices, the run aborts), strips names and producers, keeps only the interface's
//! exports, and refuses a module that imports anything itself: a sandbox has no way to
//! the host.
#![deny(missing_docs)]

use std::process::ExitCode;

use walrus::ir::{BinaryOp, Instr, InstrSeqId, Value};
use walrus::{ConstExpr, GlobalId, LocalFunction, ModuleConfig, ValType};

const PAGE: u64 = 64 * 1024;
const REQUIRED_EXPORTS: [&str; 4] = ["memory", "sandbox_report", "sandbox_input", "sandbox_run"];

struct Args {
    input: String,
    output: String,
    max_memory_mib: u64,
    /// Keep the name section, so traps show function names (for debugging a sandbox).
    keep_names: bool,
    /// Also spend fuel at every function entry (see `meter`).
    meter_calls: bool,
    /// The language the module runs, recorded for the host.
    language: String,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut max_memory_mib = None;
    let mut keep_names = false;
    let mut meter_calls = false;
    let mut language = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--language" {
            language = Some(it.next().ok_or("--language needs a value")?);
        } else if arg == "--meter-calls" {
            meter_calls = true;
        } else if arg == "--keep-names" {
            keep_names = true;
        } else if arg == "--max-memory-mib" {
            let v = it.next().ok_or("--max-memory-mib needs a value")?;
            max_memory_mib = Some(v.parse::<u64>().map_err(|e| format!("--max-memory-mib: {e}"))?);
        } else {
            positional.push(arg);
        }
    }
    let [input, output] = <[String; 2]>::try_from(positional).map_err(|_| {
        "usage: sandbox-fuel IN.wasm OUT.wasm --language L --max-memory-mib N [--meter-calls] [--keep-names]"
            .to_string()
    })?;
    Ok(Args {
        input,
        output,
        max_memory_mib: max_memory_mib.ok_or("--max-memory-mib is required")?,
        keep_names,
        meter_calls,
        language: language.ok_or("--language is required")?,
    })
}

/// Every instruction sequence reachable from the function's entry, and which of them
/// are loop bodies.
fn loop_bodies(func: &LocalFunction) -> Vec<InstrSeqId> {
    let mut loops = Vec::new();
    let mut stack = vec![func.entry_block()];
    while let Some(seq) = stack.pop() {
        for (instr, _) in &func.block(seq).instrs {
            match instr {
                Instr::Block(b) => stack.push(b.seq),
                Instr::Loop(l) => {
                    loops.push(l.seq);
                    stack.push(l.seq);
                }
                Instr::IfElse(i) => {
                    stack.push(i.consequent);
                    stack.push(i.alternative);
                }
                _ => {}
            }
        }
    }
    loops
}

/// `fuel = fuel - 1; if fuel < 0 { unreachable }` at the top of every loop body, and
/// at the function's entry when `calls` is set.
fn meter(func: &mut LocalFunction, fuel: GlobalId, calls: bool) -> usize {
    let mut loops = loop_bodies(func);
    if calls {
        loops.push(func.entry_block());
    }
    for &seq in &loops {
        let trap = {
            let mut b = func.builder_mut().dangling_instr_seq(None);
            b.unreachable();
            b.id()
        };
        let go_on = func.builder_mut().dangling_instr_seq(None).id();
        let check = [
            Instr::GlobalGet(walrus::ir::GlobalGet { global: fuel }),
            Instr::Const(walrus::ir::Const { value: Value::I64(1) }),
            Instr::Binop(walrus::ir::Binop { op: BinaryOp::I64Sub }),
            Instr::GlobalSet(walrus::ir::GlobalSet { global: fuel }),
            Instr::GlobalGet(walrus::ir::GlobalGet { global: fuel }),
            Instr::Const(walrus::ir::Const { value: Value::I64(0) }),
            Instr::Binop(walrus::ir::Binop { op: BinaryOp::I64LtS }),
            Instr::IfElse(walrus::ir::IfElse {
                consequent: trap,
                alternative: go_on,
            }),
        ];
        let body = &mut func.block_mut(seq).instrs;
        body.splice(0..0, check.into_iter().map(|i| (i, Default::default())));
    }
    loops.len()
}

fn run(args: &Args) -> Result<String, String> {
    let bytes = std::fs::read(&args.input).map_err(|e| format!("{}: {e}", args.input))?;
    let (out, metered) = instrument(&bytes, args)?;
    std::fs::write(&args.output, &out).map_err(|e| format!("{}: {e}", args.output))?;
    Ok(format!(
        "{}: {} loop headers and function entries metered, memory ceiling {} MiB, {} bytes",
        args.output,
        metered,
        args.max_memory_mib,
        out.len()
    ))
}

/// The pass itself: the instrumented module and how many checks it got.
fn instrument(bytes: &[u8], args: &Args) -> Result<(Vec<u8>, usize), String> {
    let mut config = ModuleConfig::new();
    config
        .generate_name_section(args.keep_names)
        .generate_producers_section(false);
    let mut module = config.parse(bytes).map_err(|e| format!("{}: {e}", args.input))?;

    let imports: Vec<String> = module
        .imports
        .iter()
        .map(|i| format!("{}.{}", i.module, i.name))
        .collect();
    if !imports.is_empty() {
        return Err(format!(
            "{} imports {}; a sandbox must import nothing",
            args.input,
            imports.join(", ")
        ));
    }
    for name in REQUIRED_EXPORTS {
        if !module.exports.iter().any(|e| e.name == name) {
            return Err(format!("{} does not export {name}", args.input));
        }
    }
    if module.exports.iter().any(|e| e.name == "fuel") {
        return Err(format!("{} already has a fuel export", args.input));
    }

    let max_pages = args.max_memory_mib * 1024 * 1024 / PAGE;
    let memories: Vec<_> = module.memories.iter().map(|m| m.id()).collect();
    let [memory] = memories[..] else {
        return Err(format!("{} has {} memories, not one", args.input, memories.len()));
    };
    let initial = module.memories.get(memory).initial;
    if initial > max_pages {
        return Err(format!(
            "the module starts with {} MiB, above the {} MiB ceiling",
            initial * PAGE / (1024 * 1024),
            args.max_memory_mib
        ));
    }
    // The memory becomes the module's one import, so the host can hand every fresh
    // instance the same (zeroed) memory instead of leaving a dead one per run for the
    // garbage collector. Zeroed memory plus instantiation (which writes the data
    // segments again) is exactly the state a module-defined memory starts in.
    let import = module.imports.add("sandbox", "memory", memory);
    let m = module.memories.get_mut(memory);
    m.import = Some(import);
    m.maximum = Some(max_pages);
    // What the host needs to create that memory, readable with
    // WebAssembly.Module.customSections(module, "edgeworks.sandbox").
    module.customs.add(walrus::RawCustomSection {
        name: "edgeworks.sandbox".into(),
        data: format!(
            r#"{{"language":"{}","memory_initial_pages":{initial},"memory_maximum_pages":{max_pages}}}"#,
            args.language
        )
        .into_bytes(),
    });

    // Only the interface stays exported (the guest's `#[no_mangle]` helpers, such as
    // getrandom's hook, are exported by the linker too).
    let extra: Vec<_> = module
        .exports
        .iter()
        .filter(|e| !REQUIRED_EXPORTS.contains(&e.name.as_str()))
        .map(|e| e.id())
        .collect();
    for id in extra {
        module.exports.delete(id);
    }
    let fuel = module
        .globals
        .add_local(ValType::I64, true, false, ConstExpr::Value(Value::I64(0)));
    module.exports.add("fuel", fuel);
    let mut metered = 0;
    for (_, func) in module.funcs.iter_local_mut() {
        metered += meter(func, fuel, args.meter_calls);
    }
    // Custom sections the interpreter does not need at run time.
    let custom: Vec<_> = module
        .customs
        .iter()
        .filter(|(_, c)| c.name() != "edgeworks.sandbox")
        .filter(|(_, c)| !(args.keep_names && c.name() == "name"))
        .map(|(id, _)| id)
        .collect();
    for id in custom {
        module.customs.delete(id);
    }
    Ok((module.emit_wasm(), metered))
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| run(&a)) {
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sandbox-fuel: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walrus::{FunctionBuilder, Module};

    fn args() -> Args {
        Args {
            input: "in.wasm".into(),
            output: "out.wasm".into(),
            max_memory_mib: 2,
            keep_names: false,
            meter_calls: true,
            language: "javascript".into(),
        }
    }

    /// A module shaped like a sandbox: a memory, the interface's exports, and
    /// `sandbox_run` with a loop inside a block.
    fn sandbox_like(import_something: bool) -> Vec<u8> {
        let mut m = Module::default();
        let memory = m.memories.add_local(false, false, 1, None, None);
        m.exports.add("memory", memory);
        if import_something {
            let ty = m.types.add(&[], &[]);
            m.add_import_func("env", "now", ty);
        }
        let mut run = FunctionBuilder::new(&mut m.types, &[], &[]);
        run.func_body().block(None, |b| {
            b.loop_(None, |l| {
                let id = l.id();
                l.br(id);
            });
        });
        let run = run.finish(vec![], &mut m.funcs);
        for name in ["sandbox_run", "sandbox_report", "sandbox_input"] {
            m.exports.add(name, run);
        }
        m.emit_wasm()
    }

    #[test]
    fn every_loop_and_function_entry_gets_a_check_and_fuel_is_exported() {
        let (out, metered) = instrument(&sandbox_like(false), &args()).unwrap();
        assert_eq!(metered, 2, "one loop and one function entry");
        let m = Module::from_buffer(&out).unwrap();
        let mut exports: Vec<_> = m.exports.iter().map(|e| e.name.as_str()).collect();
        exports.sort();
        assert_eq!(
            exports,
            ["fuel", "memory", "sandbox_input", "sandbox_report", "sandbox_run"]
        );
        let imports: Vec<_> = m.imports.iter().map(|i| format!("{}.{}", i.module, i.name)).collect();
        assert_eq!(imports, ["sandbox.memory"]);
        let memory = m.memories.iter().next().unwrap();
        assert_eq!(memory.maximum, Some(32), "2 MiB in 64 KiB pages");
        assert!(m.customs.iter().any(|(_, c)| c.name() == "edgeworks.sandbox"));
    }

    #[test]
    fn a_module_that_imports_anything_is_refused() {
        let e = instrument(&sandbox_like(true), &args()).unwrap_err();
        assert!(e.contains("env.now"), "{e}");
    }

    #[test]
    fn a_memory_ceiling_below_the_module_start_is_refused() {
        let e = instrument(
            &sandbox_like(false),
            &Args {
                max_memory_mib: 0,
                ..args()
            },
        )
        .unwrap_err();
        assert!(e.contains("above the 0 MiB ceiling"), "{e}");
    }
}

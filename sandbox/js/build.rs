// The interpreter recurses natively (nested calls, callbacks, the parser); the wasm
// default of 1 MiB of shadow stack is too little for the recursion limits the
// interpreter itself enforces, and overflowing it traps. Only the cdylib is linked.
fn main() {
    println!("cargo:rustc-link-arg-cdylib=-zstack-size=4194304");
}

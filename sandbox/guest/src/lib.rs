//! What every sandboxed interpreter shares.
//!
//! A sandbox module imports nothing. The host talks to it through its exports and its
//! linear memory only: it copies the code and stdin into buffers the guest hands out,
//! sets the fuel global, calls `sandbox_run`, and reads a fixed report block. The block
//! and the output buffers live at addresses fixed before the run starts, so the host can
//! still read what was printed, and why the run stopped, after the instance trapped
//! (fuel spent, memory ceiling reached, output limit crossed).
//!
//! Stopping is always a trap: the fuel pass traps when fuel runs out, the allocator
//! records a failed allocation before Rust aborts, and the output writer records the
//! limit and aborts. A script cannot catch any of them.
#![deny(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell, UnsafeCell};
use std::fmt::Write as _;

/// Capacity of each output stream's buffer; the host's limit can only be lower.
pub const STREAM_CAPACITY: usize = 256 * 1024;
const PANIC_CAPACITY: usize = 1024;

/// The block the host reads after a run, as little-endian u32 words (see `Word`).
#[repr(C)]
pub struct Report {
    words: [Cell<u32>; WORDS],
}

/// Index of each word in the report block; the host's runner uses the same numbers.
#[derive(Clone, Copy)]
#[repr(usize)]
pub enum Word {
    /// 0 while running, 1 finished ok, 2 finished with the script's error.
    Status = 0,
    /// Non-zero when an allocation failed (the memory ceiling was reached).
    OutOfMemory = 1,
    /// Non-zero when stdout + stderr crossed the run's output limit.
    OutputLimit = 2,
    /// Non-zero when the interpreter panicked.
    Panicked = 3,
    /// Address of the stdout bytes.
    StdoutPtr = 4,
    /// Bytes of stdout kept.
    StdoutLen = 5,
    /// Address of the stderr bytes.
    StderrPtr = 6,
    /// Bytes of stderr kept.
    StderrLen = 7,
    /// Address of the result text (UTF-8), when status is 1.
    ResultPtr = 8,
    /// Length of the result text; 0 with a null pointer means no result.
    ResultLen = 9,
    /// Address of the error message, when status is 2.
    ErrorPtr = 10,
    /// Length of the error message.
    ErrorLen = 11,
    /// 1-based line of the error in the script, 0 when unknown.
    ErrorLine = 12,
    /// Address of the panic message.
    PanicPtr = 13,
    /// Length of the panic message.
    PanicLen = 14,
    /// The highest address the allocator handed out (end of block): the run's peak.
    HeapTop = 15,
}
const WORDS: usize = 16;

struct Shared<T>(UnsafeCell<T>);
// SAFETY: the sandbox is built for wasm32 without threads; nothing runs concurrently.
unsafe impl<T> Sync for Shared<T> {}

// SAFETY (all statics below): single-threaded, see `Shared`.
unsafe impl Sync for Report {}
static REPORT: Report = Report {
    words: [const { Cell::new(0) }; WORDS],
};
static STDOUT: Shared<[u8; STREAM_CAPACITY]> = Shared(UnsafeCell::new([0; STREAM_CAPACITY]));
static STDERR: Shared<[u8; STREAM_CAPACITY]> = Shared(UnsafeCell::new([0; STREAM_CAPACITY]));
static PANIC: Shared<[u8; PANIC_CAPACITY]> = Shared(UnsafeCell::new([0; PANIC_CAPACITY]));

struct RunState {
    output_limit: Cell<usize>,
    inputs: RefCell<[Vec<u8>; 2]>,
    results: RefCell<Vec<Vec<u8>>>,
    random: Cell<u64>,
}
// SAFETY: single-threaded, see `Shared`.
unsafe impl Sync for RunState {}
static STATE: RunState = RunState {
    output_limit: Cell::new(STREAM_CAPACITY),
    inputs: RefCell::new([Vec::new(), Vec::new()]),
    results: RefCell::new(Vec::new()),
    random: Cell::new(0x9e37_79b9_7f4a_7c15),
};

fn set(word: Word, value: u32) {
    REPORT.words[word as usize].set(value);
}

fn get(word: Word) -> u32 {
    REPORT.words[word as usize].get()
}

fn addr<T>(p: *const T) -> u32 {
    p as usize as u32
}

/// The global allocator of every sandbox: the system allocator, plus a flag in the
/// report when an allocation fails, so the host can tell the memory ceiling from a
/// crash after the abort that follows.
pub struct WatchedAllocator;

// SAFETY: every call is forwarded unchanged to `System`.
unsafe impl GlobalAlloc for WatchedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        watch(unsafe { System.alloc(layout) }, layout.size())
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        watch(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        watch(unsafe { System.realloc(ptr, layout, new_size) }, new_size)
    }
}

/// Flags a failed allocation; raises the high-water mark for a successful one.
fn watch(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        set(Word::OutOfMemory, 1);
    } else {
        let end = (p as usize).saturating_add(size) as u32;
        if end > get(Word::HeapTop) {
            set(Word::HeapTop, end);
        }
    }
    p
}

#[global_allocator]
static ALLOCATOR: WatchedAllocator = WatchedAllocator;

/// Which output stream a write goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The script's standard output.
    Stdout,
    /// The script's standard error.
    Stderr,
}

/// Appends to a stream. Crossing the run's output limit (stdout and stderr together)
/// keeps what fits, flags the report and aborts the run: an output bomb is stopped
/// where it crosses the line, not when its fuel runs out.
pub fn write(stream: Stream, bytes: &[u8]) {
    let (buf, len_word) = match stream {
        Stream::Stdout => (&STDOUT, Word::StdoutLen),
        Stream::Stderr => (&STDERR, Word::StderrLen),
    };
    let used = (get(Word::StdoutLen) + get(Word::StderrLen)) as usize;
    let room = STATE.output_limit.get().saturating_sub(used);
    let len = get(len_word) as usize;
    let take = floor_char_boundary(bytes, room.min(bytes.len())).min(STREAM_CAPACITY - len);
    // SAFETY: single-threaded; `len + take` stays within the buffer.
    unsafe { (&mut *buf.0.get())[len..len + take].copy_from_slice(&bytes[..take]) };
    set(len_word, (len + take) as u32);
    if take < bytes.len() {
        set(Word::OutputLimit, 1);
        std::process::abort();
    }
}

fn floor_char_boundary(bytes: &[u8], mut at: usize) -> usize {
    if at >= bytes.len() {
        return bytes.len();
    }
    // Continuation bytes are 0b10xx_xxxx; step back to the start of a character.
    while at > 0 && (bytes[at] & 0xC0) == 0x80 {
        at -= 1;
    }
    at
}

/// Records that the interpreter itself refused an allocation as too large (Python's
/// `MemoryError`): the run reached the memory ceiling even though nothing trapped.
pub fn mark_out_of_memory() {
    set(Word::OutOfMemory, 1);
}

/// The script's code, as the host wrote it.
pub fn code() -> Vec<u8> {
    std::mem::take(&mut STATE.inputs.borrow_mut()[0])
}

/// The script's stdin, as the host wrote it.
pub fn stdin() -> Vec<u8> {
    std::mem::take(&mut STATE.inputs.borrow_mut()[1])
}

/// How a script's run ended, when it ended by itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Finished; the value of the last expression, rendered, if there was one.
    Ok(Option<String>),
    /// The script threw (or failed to parse).
    Error {
        /// The error as the language prints it (`TypeError: x is not a function`).
        message: String,
        /// 1-based line in the script, when the interpreter knows it.
        line: Option<u32>,
    },
}

fn keep(bytes: Vec<u8>) -> (u32, u32) {
    let ptr = addr(bytes.as_ptr());
    let len = bytes.len() as u32;
    // Kept alive until the instance is thrown away, which is right after the host reads.
    STATE.results.borrow_mut().push(bytes);
    (ptr, len)
}

/// Records how the run ended in the report; returns the status word.
pub fn finish(outcome: Outcome) -> u32 {
    match outcome {
        Outcome::Ok(result) => {
            if let Some(text) = result {
                let (p, l) = keep(text.into_bytes());
                set(Word::ResultPtr, p);
                set(Word::ResultLen, l);
            }
            set(Word::Status, 1);
        }
        Outcome::Error { message, line } => {
            let (p, l) = keep(message.into_bytes());
            set(Word::ErrorPtr, p);
            set(Word::ErrorLen, l);
            set(Word::ErrorLine, line.unwrap_or(0));
            set(Word::Status, 2);
        }
    }
    get(Word::Status)
}

struct PanicWriter(usize);
impl std::fmt::Write for PanicWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        // No allocation here: a panic can come from a failed allocation's aftermath.
        let take = floor_char_boundary(s.as_bytes(), (PANIC_CAPACITY - self.0).min(s.len()));
        // SAFETY: single-threaded; stays within the buffer.
        unsafe { (&mut *PANIC.0.get())[self.0..self.0 + take].copy_from_slice(&s.as_bytes()[..take]) };
        self.0 += take;
        set(Word::PanicLen, self.0 as u32);
        Ok(())
    }
}

/// Prepares a run: the report's fixed addresses, the output limit, the random seed and
/// a panic hook that records the message. Called by `sandbox_exports!`.
pub fn begin(seed: u64, output_limit: u32) {
    set(Word::StdoutPtr, addr(STDOUT.0.get()));
    set(Word::StderrPtr, addr(STDERR.0.get()));
    set(Word::PanicPtr, addr(PANIC.0.get()));
    STATE.output_limit.set((output_limit as usize).min(STREAM_CAPACITY));
    STATE.random.set(seed | 1);
    std::panic::set_hook(Box::new(|info| {
        set(Word::Panicked, 1);
        let _ = write!(PanicWriter(0), "{info}");
        // A size beyond the address space (`"x".repeat(2 ** 30)` in UTF-16) panics
        // before any allocation is tried: that is the memory ceiling too.
        let message = info.payload().downcast_ref::<&str>().copied();
        if message == Some("capacity overflow") {
            set(Word::OutOfMemory, 1);
        }
    }));
}

/// The report block's address (stable for the instance's life).
pub fn report_address() -> u32 {
    addr(&REPORT)
}

/// A buffer of `len` bytes for input `slot` (0: code, 1: stdin); 0 if it cannot be had.
pub fn input_buffer(slot: u32, len: u32) -> u32 {
    let Some(target) = STATE.inputs.borrow_mut().get_mut(slot as usize).map(|v| {
        *v = vec![0; len as usize];
        addr(v.as_ptr())
    }) else {
        return 0;
    };
    target
}

/// The next 64 random bits (xorshift64*, seeded by the host per run). Not for
/// cryptography: scripts get `Math.random` / `hash()` randomness, nothing more.
pub fn next_random() -> u64 {
    let mut x = STATE.random.get();
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    STATE.random.set(x);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// getrandom's custom backend (wasm32 only, selected in sandbox/.cargo/config.toml):
/// the interpreters' randomness comes from the per-run seed, never from the host.
///
/// # Safety
/// `dest` must be valid for `len` bytes of writes, as getrandom guarantees.
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub unsafe extern "Rust" fn __getrandom_v03_custom(dest: *mut u8, len: usize) -> Result<(), getrandom::Error> {
    for i in 0..len {
        // SAFETY: the caller passes a buffer of `len` bytes.
        unsafe { *dest.add(i) = next_random() as u8 };
    }
    Ok(())
}

/// Defines a sandbox module's exports around the language's
/// `run(code, stdin, now_ms, flags) -> Outcome`:
/// `sandbox_report`, `sandbox_input` and `sandbox_run`.
#[macro_export]
macro_rules! sandbox_exports {
    ($run:path) => {
        /// The report block's address.
        #[no_mangle]
        pub extern "C" fn sandbox_report() -> u32 {
            $crate::report_address()
        }

        /// A buffer for the code (slot 0) or stdin (slot 1).
        #[no_mangle]
        pub extern "C" fn sandbox_input(slot: u32, len: u32) -> u32 {
            $crate::input_buffer(slot, len)
        }

        /// Runs the code once; returns the status word (1 ok, 2 error).
        #[no_mangle]
        pub extern "C" fn sandbox_run(seed: u64, now_ms: f64, output_limit: u32, flags: u32) -> u32 {
            $crate::begin(seed, output_limit);
            let code = $crate::code();
            let stdin = $crate::stdin();
            let outcome = $run(
                &String::from_utf8_lossy(&code),
                &String::from_utf8_lossy(&stdin),
                now_ms,
                flags,
            );
            $crate::finish(outcome)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_char_boundary_never_splits_a_character() {
        let s = "aé€".as_bytes(); // 1 + 2 + 3 bytes
        assert_eq!(floor_char_boundary(s, 2), 1);
        assert_eq!(floor_char_boundary(s, 3), 3);
        assert_eq!(floor_char_boundary(s, 4), 3);
        assert_eq!(floor_char_boundary(s, 99), 6);
    }

    #[test]
    fn writes_within_the_limit_are_kept_in_order() {
        begin(7, 100);
        write(Stream::Stdout, b"hello ");
        write(Stream::Stdout, b"world");
        write(Stream::Stderr, b"oops");
        assert_eq!(get(Word::StdoutLen), 11);
        assert_eq!(get(Word::StderrLen), 4);
        assert_eq!(get(Word::OutputLimit), 0);
    }
}

# Runs once per execution before the script, in a namespace of its own. The names
# _write_stdout, _write_stderr, _stdin_text and _now are put there by the sandbox.
import sys
import builtins
import time as _time


class _Output:
    def __init__(self, write):
        self._write = write

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not " + type(s).__name__)
        self._write(s)
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False


class _Input:
    def __init__(self, text):
        self._lines = text.splitlines(True)
        self._at = 0

    def readline(self, size=-1):
        if self._at >= len(self._lines):
            return ""
        line = self._lines[self._at]
        self._at += 1
        return line

    def read(self, size=-1):
        rest = "".join(self._lines[self._at:])
        self._at = len(self._lines)
        return rest

    def readlines(self):
        rest = self._lines[self._at:]
        self._at = len(self._lines)
        return rest

    def __iter__(self):
        return iter(self.readlines())

    def isatty(self):
        return False


sys.stdout = sys.__stdout__ = _Output(_write_stdout)
sys.stderr = sys.__stderr__ = _Output(_write_stderr)
sys.stdin = sys.__stdin__ = _Input(_stdin_text)


def _input(prompt=""):
    if prompt:
        sys.stdout.write(str(prompt))
    line = sys.stdin.readline()
    if line == "":
        raise EOFError("EOF when reading a line")
    return line[:-1] if line.endswith("\n") else line


builtins.input = _input

# The VM's clock would ask the host; the script gets the request's time in whole
# seconds, and sleeping advances nothing.
_clock = {"now": _now}


def _time_s():
    return _clock["now"]


def _time_ns():
    return int(_clock["now"]) * 1000000000


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")


for _name in ("time", "monotonic", "perf_counter", "process_time", "thread_time"):
    setattr(_time, _name, _time_s)
for _name in ("time_ns", "monotonic_ns", "perf_counter_ns", "process_time_ns", "thread_time_ns"):
    setattr(_time, _name, _time_ns)
_time.sleep = _sleep

# Each Python call nests several wasm calls on the engine's native stack (about 1 MB
# in V8); the default limit of 1000 can overflow it before RecursionError is raised
# (a handler that recurses again needs more per level). 500 leaves room for that.
sys.setrecursionlimit(500)

for _name in ("open", "breakpoint", "help", "exit", "quit", "copyright", "credits", "license"):
    if hasattr(builtins, _name):
        delattr(builtins, _name)


def _json_str(s):
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif c < 0x20 or 0xD800 <= c <= 0xDFFF:
            out.append("\\u%04x" % c)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _json(v, depth):
    if depth > 64:
        raise ValueError("too deep")
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    t = type(v)
    if t is int:
        return str(v)
    if t is float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("not JSON")
        return repr(v)
    if t is str:
        return _json_str(v)
    if t is list or t is tuple:
        return "[" + ",".join(_json(x, depth + 1) for x in v) + "]"
    if t is dict and all(type(k) is str for k in v):
        return "{" + ",".join(_json_str(k) + ":" + _json(x, depth + 1) for k, x in v.items()) + "}"
    raise ValueError("not JSON")


def _render(v):
    """The result as JSON text: the value when JSON holds it, else its repr as a string."""
    try:
        return _json(v, 0)
    except Exception:
        return _json_str(repr(v))


def _describe(e):
    """(message, line, memory) for an exception the script raised: the innermost line of the
    script in its traceback, or a SyntaxError's own line; memory is whether it means
    the memory ceiling was reached."""
    line = 0
    if isinstance(e, SyntaxError) and e.lineno:
        line = e.lineno
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<main>":
            line = tb.tb_lineno
        tb = tb.tb_next
    text = str(e)
    # CPython raises MemoryError when a repeat's size cannot exist (list_repeat,
    # bytes_repeat); RustPython raises OverflowError there. Both are the ceiling.
    too_big = isinstance(e, MemoryError) or (
        isinstance(e, OverflowError) and "repeat" in text and "too long" in text
    )
    return (type(e).__name__ + (": " + text if text else ""), line, too_big)

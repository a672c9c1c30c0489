# tinytorch-gdb.py - gdb support for tinyTorch-C: pretty-printers and a tape command.
#
# Load it with one line (from the repository root):
#
#   gdb -iex 'source tinytorch/gdb/tinytorch-gdb.py' build-debug/examples/tutorials/t08_gdb
#
# or put `source /path/to/tinytorch/gdb/tinytorch-gdb.py` in ~/.gdbinit.
#
# What it adds:
#   p *t          tt_tensor: name, shape, dtype, producing op and tape index,
#                 requires_grad, lifetime, and the first values of data and grad
#   p t           tt_tensor *: the address and a one-line summary
#   p *n          tt_node: index, op, output, inputs and the caller's file:line
#   tt-tape       the tape, one node per line, like tt_tape_print() (read from the
#                 library's statics g_tape / g_tape_len; works on core files too)
#   set tt-max-values N   how many values `p *t` shows (default 8)
#
# It only reads memory: nothing is called in the inferior. Needs a build with debug
# information (-g; `make debug` gives -O0 -g3).

import struct

import gdb


class _MaxValues(gdb.Parameter):
    """Number of data and grad values the tt_tensor pretty-printer shows."""

    set_doc = "Set how many values of a tt_tensor `print` shows."
    show_doc = "Show how many values of a tt_tensor `print` shows."

    def __init__(self):
        super().__init__("tt-max-values", gdb.COMMAND_DATA, gdb.PARAM_ZUINTEGER)
        self.value = 8

    def get_show_string(self, svalue):
        return "tt_tensor values shown: " + svalue


_max_values = _MaxValues()

_DTYPES = {0: "float32", 1: "int32"}


def _cstr(v):
    """A char * or char[] as a Python string ('' if NULL or unreadable)."""
    try:
        if v.type.strip_typedefs().code == gdb.TYPE_CODE_PTR and int(v) == 0:
            return ""
        return v.string(errors="replace")
    except gdb.error:
        return "?"


def _shape(t):
    return "[" + ", ".join(str(int(t["shape"][i])) for i in range(int(t["ndim"]))) + "]"


def _name(t):
    n = _cstr(t["name"])
    return "'%s'" % n if n else "<unnamed>"


def _values(ptr, size, is_int, limit):
    """'{v0, v1, ...}' for the first `limit` of `size` values at ptr (float or int32)."""
    addr = int(ptr)
    if addr == 0:
        return "NULL"
    n = min(size, limit)
    try:
        raw = gdb.selected_inferior().read_memory(addr, 4 * n).tobytes()
    except gdb.MemoryError:
        return "<unreadable at 0x%x>" % addr
    vals = struct.unpack("<%d%s" % (n, "i" if is_int else "f"), raw)
    text = ", ".join(str(v) if is_int else "%.4g" % v for v in vals)
    if size > n:
        text += ", ... (%d values)" % size
    return "{" + text + "}"


def _op(t):
    """'add #3' for an op output, 'leaf' for a leaf."""
    node = t["node"]
    if int(node) == 0:
        return "leaf"
    try:
        return "%s #%d" % (_cstr(node["op"]), int(node["index"]))
    except gdb.error:  # tt_node incomplete in this compilation unit
        return "node@0x%x" % int(node)


def _summary(t):
    dtype = _DTYPES.get(int(t["dtype"]), "dtype?")
    flags = ["op=" + _op(t)]
    if bool(t["requires_grad"]):
        flags.append("requires_grad")
    flags.append("persistent" if bool(t["persistent"]) else "temporary")
    if bool(t["is_view"]):
        flags.append("view")
    return "%s %s %s %s" % (_name(t), _shape(t), dtype, " ".join(flags))


class TensorPrinter:
    """tt_tensor: header line, then data and grad."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        t = self.val
        try:
            size = int(t["size"])
            limit = int(_max_values.value or 8)
            is_int = int(t["dtype"]) == 1
            return "tt_tensor %s\n  data = %s\n  grad = %s" % (
                _summary(t),
                _values(t["data"], size, is_int, limit),
                _values(t["grad"], size, False, limit),
            )
        except gdb.error as e:
            return "tt_tensor <error: %s>" % e


class TensorPtrPrinter:
    """tt_tensor *: address and one-line summary."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        addr = int(self.val)
        if addr == 0:
            return "(tt_tensor *) NULL"
        try:
            return "(tt_tensor *) 0x%x %s" % (addr, _summary(self.val.dereference()))
        except gdb.error:
            return "(tt_tensor *) 0x%x <unreadable>" % addr


def _node_line(n):
    """'  3 add   's' [2, 3]  <- #0 'c' [2, 3], #1 'sq' [2, 3]   (file.c:61)'"""
    out = n["out"]
    ins = []
    for k in range(int(n["n_in"])):
        t = n["in"][k]
        if int(t) == 0:
            continue
        t = t.dereference()
        where = "#%d " % int(t["node"]["index"]) if int(t["node"]) else ""
        ins.append("%s%s %s" % (where, _name(t), _shape(t)))
    src = n["src"]
    return "%4d %-12s %-20s %-12s <- %s   (%s:%d)" % (
        int(n["index"]),
        _cstr(n["op"]),
        _name(out.dereference()),
        _shape(out.dereference()),
        ", ".join(ins),
        _cstr(src["file"]) or "?",
        int(src["line"]),
    )


class NodePrinter:
    def __init__(self, val):
        self.val = val

    def to_string(self):
        try:
            n = self.val
            line = _node_line(n).strip()
            f = ", ".join("%g" % float(n["f"][i]) for i in range(6))
            i = ", ".join(str(int(n["i"][k])) for k in range(6))
            return "tt_node #%s\n  f = {%s}  i = {%s}  ctx = 0x%x" % (
                line, f, i, int(n["ctx"]))
        except gdb.error as e:
            return "tt_node <error: %s>" % e


def _lookup(val):
    t = val.type.strip_typedefs()
    if t.code == gdb.TYPE_CODE_STRUCT:
        if t.tag == "tt_tensor":
            return TensorPrinter(val)
        if t.tag == "tt_node":
            return NodePrinter(val)
    elif t.code == gdb.TYPE_CODE_PTR:
        target = t.target().strip_typedefs()
        if target.code == gdb.TYPE_CODE_STRUCT and target.tag == "tt_tensor":
            return TensorPtrPrinter(val)
    return None


def _static(name):
    """A file-scope static of autograd.c."""
    try:
        sym = gdb.lookup_static_symbol(name)
        if sym is not None:
            return sym.value()
    except (AttributeError, gdb.error):
        pass
    return gdb.parse_and_eval("'autograd.c'::%s" % name)


class TapeCommand(gdb.Command):
    """Print the tape: tt-tape [FIRST [LAST]].
One line per recorded node: index, op, output name and shape, inputs (#k = output of
node k), and the file:line of the call that recorded it. Reads the statics g_tape and
g_tape_len of tinytorch/autograd.c, so it works without calling into the program."""

    def __init__(self):
        super().__init__("tt-tape", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        tape = _static("g_tape")
        n = int(_static("g_tape_len"))
        args = gdb.string_to_argv(arg)
        first = int(args[0]) if args else 0
        last = int(args[1]) if len(args) > 1 else n - 1
        gdb.write("tape: %d node%s\n" % (n, "" if n == 1 else "s"))
        for i in range(max(first, 0), min(last, n - 1) + 1):
            gdb.write(_node_line(tape[i].dereference()) + "\n")


TapeCommand()
gdb.pretty_printers.append(_lookup)

"""The microkernels' innermost multiply-accumulate loops, read from the compiled library's disassembly.

A register-tiled kernel is only fast while its accumulators and weights stay in vector registers. When the compiler
gives up (an unroll lambda left out of line, one live vector too many) the loop still computes the right result but
moves vectors through the stack every iteration, which no correctness test notices. This module finds those loops in
`objdump -d` output; tests/packaging/test_disassembly.py fails on them and bench/mca.py feeds the hottest one to
llvm-mca.

    python bench/disasm.py [LIB]   # every such loop per ISA and its stack traffic (default: the package's library)

Loops are natural loops of each function's control-flow graph: a jump to a block that dominates it closes a loop
whose body is every block reaching the jump without passing that header; a loop is innermost when no other loop's
header lies in its body. For a loop laid out in one piece this is the backward jump whose [target, jump] range holds no
other backward jump. Unlike that address-range rule, it also sees through GCC's layout of the depthwise loops, where
the activation's NaN handling and the partial-vector tails sit after the loop and jump back into the middle of it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

ISAS = ("DEFAULT", "AVX2", "AVX512")
KERNELS = ("conv_tile", "depthwise_rows_k")
# Every symbol of a kernel: its instantiations, GCC's clones ([clone .constprop.0], .isra, .cold) and the lambdas of its
# body that GCC left out of line (then the loop calls them and the accumulators live in memory).
_SYMBOL = re.compile(r"cnnkernels::cpu::(?P<isa>\w+)::\(anonymous namespace\)::(?P<kernel>" + "|".join(KERNELS) + r")<")
_HEADER = re.compile(r"^([0-9a-f]+) <(.*)>:$")
_TARGET = re.compile(r"^(?:(?:bnd|notrack)\s+)*(j[a-z]+|call)\s+([0-9a-f]+)(?:\s+<(.*)>)?")
# AT&T memory operand disp(base,index,scale): group 1 is the base register.
_MEM = re.compile(r"(?:-?0x[0-9a-f]+|\b\d+)?\((%[a-z0-9]+)?(?:,%[a-z0-9]+(?:,\d)?)?\)")
_VREG = re.compile(r"%[xyz]mm\d+")
_PREFIXES = ("lock", "rep", "repz", "repnz", "data16", "bnd", "notrack")
_NO_FALLTHROUGH = ("jmp", "ret", "ud2", "hlt")

# Multiply-accumulate instructions. The DEFAULT build (SSE2, no FMA) multiplies and adds separately, packed or, where
# GCC did not vectorise ATen's generic Vectorized<float> (an 8-float array), scalar.
_FMA = re.compile(r"^v?fn?m(?:add|sub)\d*[ps][sd]$")
_MUL = re.compile(r"^mul[ps]s$")
_ADD = re.compile(r"^add[ps]s$")
_MAC_CALLEE = re.compile(r"::fn?m(?:add|sub)<")  # at::vec::fmadd<float> left out of line


class Insn(NamedTuple):  # a tuple: the kernels of one library have ~800k instructions
    addr: int
    text: str       # AT&T syntax, objdump's `# <symbol>` comments dropped
    mnemonic: str   # prefixes (rep, notrack, ...) skipped
    operands: str

    @staticmethod
    def parse(addr: int, text: str) -> "Insn":
        words = text.split(None, 1)
        while len(words) > 1 and words[0] in _PREFIXES:
            words = words[1].split(None, 1)
        return Insn(addr, text, words[0], words[1] if len(words) > 1 else "")

    def target(self) -> Optional[Tuple[int, str]]:
        """(address, symbol) of a direct jump or call."""
        m = _TARGET.match(self.text)
        return (int(m.group(2), 16), m.group(3) or "") if m else None

    def is_mac(self) -> bool:
        return bool(_FMA.match(self.mnemonic) or _MUL.match(self.mnemonic))


@dataclass
class Function:
    name: str
    isa: str
    kernel: str
    insns: List[Insn]
    frame_pointer: bool  # the prologue sets %rbp = %rsp: %rbp addresses the frame, not data

    @property
    def start(self) -> int:
        return self.insns[0].addr

    @property
    def short_name(self) -> str:
        """`AVX512::conv_tile<float, c10::Half, 12> [clone .constprop.0]`: the parameter list and namespaces dropped."""
        name = self.name.replace("cnnkernels::cpu::", "").replace("(anonymous namespace)::", "")
        return re.sub(r"^(?:void|auto) |\((?:ConvRowsArgs|DwRowsArgs)[^)]*\)", "", name)

    def stack_bases(self) -> Tuple[str, ...]:
        return ("%rsp", "%rbp") if self.frame_pointer else ("%rsp",)


@dataclass
class Loop:
    function: Function
    header: int              # address of the block the back edges jump to
    insns: List[Insn]        # the body in address order (not necessarily contiguous)
    innermost: bool = True   # else the smallest loop around multiply-accumulates that are in no innermost loop
    depth: int = 0           # loops of the function around this one
    mac_calls: List[Insn] = field(default_factory=list)     # out-of-line calls that multiply-accumulate
    # A vector stored to a stack slot, or reloaded from a slot the loop stores to: a value (an accumulator, a weight
    # loaded this iteration) round-tripping through memory every iteration.
    vector_stack: List[Insn] = field(default_factory=list)
    # Vector loads of slots the loop never writes: loop-invariant values (e.g. the 25 taps of a 5x5 depthwise filter in
    # 16 ymm registers), costing what a load from the weight array would. Allowed, informational.
    vector_reloads: List[Insn] = field(default_factory=list)
    gpr_stack: List[Insn] = field(default_factory=list)     # general-purpose registers only: allowed, informational

    @property
    def start(self) -> int:
        return self.insns[0].addr

    @property
    def end(self) -> int:
        return self.insns[-1].addr

    @property
    def macs(self) -> int:
        """Multiply-accumulate instructions per iteration (FMAs; for SSE2 code, the multiplies)."""
        return _count_macs(self.insns)

    @property
    def fmas(self) -> int:
        return sum(1 for i in self.insns if _FMA.match(i.mnemonic))

    @property
    def is_mac(self) -> bool:
        return self.macs > 0 or bool(self.mac_calls)

    @property
    def failures(self) -> List[Insn]:
        """Vector stack traffic, and calls whose vector arguments and results cross the call in memory."""
        return sorted(self.vector_stack + self.mac_calls, key=lambda i: i.addr)

    def where(self) -> str:
        kind = "" if self.innermost else "; not innermost: the smallest loop around some of the kernel's MACs"
        return (f"{self.function.short_name}: loop {self.start:#x}..{self.end:#x}, header {self.header:#x} "
                f"({len(self.insns)} instructions, {self.macs} multiply-accumulates, {len(self.mac_calls)} "
                f"out-of-line, nested in {self.depth}{kind})")


def _count_macs(insns: List[Insn]) -> int:
    fma = sum(1 for i in insns if _FMA.match(i.mnemonic))
    if fma:
        return fma
    muls = sum(1 for i in insns if _MUL.match(i.mnemonic))
    return muls if muls and any(_ADD.match(i.mnemonic) for i in insns) else 0


def objdump() -> Optional[str]:
    return shutil.which("objdump")


@lru_cache(maxsize=4)
def _disassemble(path: str, mtime_ns: int) -> str:
    # mtime in the key: a rebuild may replace the library under the same path within one process.
    tool = objdump()
    if tool is None:
        raise FileNotFoundError("objdump not found (it comes with binutils, beside gcc)")
    return subprocess.run([tool, "-d", "--no-show-raw-insn", "-C", path], check=True, capture_output=True,
                          text=True).stdout


def disassemble(lib: Path) -> str:
    lib = Path(lib).resolve()
    return _disassemble(str(lib), lib.stat().st_mtime_ns)


def kernel_functions(text: str) -> List[Function]:
    """The kernel symbols of an `objdump -d --no-show-raw-insn -C` listing, in address order."""
    out: List[Function] = []
    for block in text.split("\n\n"):
        header, _, body = block.strip("\n").partition("\n")
        h = _HEADER.match(header)
        m = _SYMBOL.search(h.group(2)) if h else None
        if not m:
            continue
        insns = []
        for line in body.splitlines():
            addr, sep, insn = line.partition(":\t")
            if sep and insn.strip():
                insns.append(Insn.parse(int(addr, 16), insn.split("#", 1)[0].strip()))
        if insns:
            fp = any(i.text.replace(" ", "") == "mov%rsp,%rbp" for i in insns[:16])
            out.append(Function(h.group(2), m.group("isa"), m.group("kernel"), insns, fp))
    return out


def natural_loops(f: Function) -> List[Tuple[int, List[int], bool]]:
    """(header instruction index, body instruction indices in order, innermost) of every loop of `f`."""
    insns, n = f.insns, len(f.insns)
    index = {i.addr: k for k, i in enumerate(insns)}
    jumps = {}  # instruction index -> target instruction index
    leaders = {0}
    for k, i in enumerate(insns):
        if i.mnemonic.startswith("j") or i.mnemonic in _NO_FALLTHROUGH:
            t = i.target() if i.mnemonic.startswith("j") else None
            if t and t[0] in index:
                jumps[k] = index[t[0]]
                leaders.add(index[t[0]])
            if k + 1 < n:
                leaders.add(k + 1)
    starts = sorted(leaders)
    block_of = {s: b for b, s in enumerate(starts)}
    ends = [e - 1 for e in starts[1:]] + [n - 1]
    succ: List[List[int]] = []
    for b, e in enumerate(ends):
        s = [block_of[jumps[e]]] if e in jumps else []
        if insns[e].mnemonic not in _NO_FALLTHROUGH and b + 1 < len(starts):
            s.append(b + 1)
        succ.append(s)
    pred: List[List[int]] = [[] for _ in starts]
    for b, ss in enumerate(succ):
        for s in ss:
            pred[s].append(b)

    # Dominators (Cooper, Harvey, Kennedy) over the blocks reachable from the entry, in reverse postorder.
    order, seen, stack = [], {0}, [(0, iter(succ[0]))]
    while stack:
        b, it = stack[-1]
        nxt = next((s for s in it if s not in seen), None)
        if nxt is None:
            order.append(b)
            stack.pop()
        else:
            seen.add(nxt)
            stack.append((nxt, iter(succ[nxt])))
    rpo = order[::-1]
    rank = {b: r for r, b in enumerate(rpo)}
    idom = {0: 0}
    changed = True
    while changed:
        changed = False
        for b in rpo[1:]:
            ps = [p for p in pred[b] if p in idom]
            new = ps[0]
            for p in ps[1:]:
                a, c = p, new
                while a != c:
                    while rank[a] > rank[c]:
                        a = idom[a]
                    while rank[c] > rank[a]:
                        c = idom[c]
                new = a
            if idom.get(b) != new:
                idom[b] = new
                changed = True

    def dominates(h: int, b: int) -> bool:
        while b != h and b != 0:
            b = idom[b]
        return b == h

    bodies: Dict[int, Set[int]] = {}
    for b in rpo:
        for h in succ[b]:
            if h in idom and dominates(h, b):
                body = bodies.setdefault(h, {h})
                work = [b]
                while work:
                    x = work.pop()
                    if x not in body:
                        body.add(x)
                        work.extend(p for p in pred[x] if p in idom)
    out = []
    for h, body in bodies.items():
        innermost = not any(other != h and other in body for other in bodies)
        idx = [k for blk in sorted(body) for k in range(starts[blk], ends[blk] + 1)]
        out.append((starts[h], idx, innermost))
    return out


def _mac_call(i: Insn, mac_functions: Dict[int, bool]) -> bool:
    t = i.target() if i.mnemonic == "call" else None
    return bool(t and (mac_functions.get(t[0]) or _MAC_CALLEE.search(t[1])))


def _stack_slot(i: Insn, bases: Tuple[str, ...]) -> Optional[Tuple[str, bool]]:
    """(the stack operand's text, whether the instruction writes it), or None when it addresses no stack slot. In AT&T
    syntax the destination comes last (an AVX-512 mask `{%k1}` may follow it)."""
    mems = [m for m in _MEM.finditer(i.operands) if m.group(1) in bases]
    if not mems:
        return None
    m = mems[-1]
    rest = i.operands[m.end():].strip()
    return m.group(0), (rest == "" or rest.startswith("{")) and i.mnemonic not in ("cmp", "test", "vptest", "vucomiss",
                                                                                  "vcomiss", "ucomiss", "comiss")


def _inspect(loop: Loop, mac_functions: Dict[int, bool]) -> Loop:
    bases = loop.function.stack_bases()
    marks = tuple(f"({b}" for b in bases)
    vector: List[Tuple[Insn, str, bool]] = []
    for i in loop.insns:
        if i.mnemonic == "call" and _mac_call(i, mac_functions):
            loop.mac_calls.append(i)
        elif not (marks[0] in i.text or (len(marks) > 1 and marks[1] in i.text)) or i.mnemonic.startswith(
                ("lea", "nop", "prefetch", "call")):
            continue
        elif (slot := _stack_slot(i, bases)) is not None:
            if _VREG.search(i.operands):
                vector.append((i, *slot))
            else:
                loop.gpr_stack.append(i)
    written = {slot for _, slot, store in vector if store}
    for i, slot, store in vector:
        (loop.vector_stack if store or slot in written else loop.vector_reloads).append(i)
    return loop


def _mac_loops_of(f: Function, mac_functions: Dict[int, bool]) -> List[Loop]:
    """The innermost loops that multiply-accumulate and, for a multiply-accumulate in none of them (in DEFAULT code
    an element-wise loop of the generic Vectorized nests inside the MAC loop), the smallest loop around it."""
    loops: List[Loop] = []
    covered: Set[int] = set()
    nests = sorted(natural_loops(f), key=lambda x: len(x[1]))
    members = {h: set(idx) for h, idx, _ in nests}

    def add(h: int, idx: List[int], innermost: bool) -> None:
        depth = sum(1 for h2, _, _ in nests if h2 != h and h in members[h2])
        loop = _inspect(Loop(f, f.insns[h].addr, [f.insns[k] for k in idx], innermost, depth), mac_functions)
        if loop.is_mac:
            loops.append(loop)
            covered.update(idx)

    for h, idx, inner in nests:
        if inner:
            add(h, idx, True)
    outer = [((h, idx), members[h]) for h, idx, inner in nests if not inner]  # smallest first
    for k, i in enumerate(f.insns):
        if k not in covered and (i.is_mac() or _mac_call(i, mac_functions)):
            around = next((n for n, members in outer if k in members), None)
            if around:
                add(*around, False)
    return sorted(loops, key=lambda loop: loop.start)


@lru_cache(maxsize=4)
def _functions(path: str, mtime_ns: int) -> List[Function]:
    return kernel_functions(_disassemble(path, mtime_ns))


def functions(lib: Path) -> List[Function]:
    """The kernel functions of a library (cached per file and mtime)."""
    lib = Path(lib).resolve()
    return _functions(str(lib), lib.stat().st_mtime_ns)


@lru_cache(maxsize=4)
def _mac_loops(path: str, mtime_ns: int) -> Dict[str, List[Loop]]:
    functions = _functions(path, mtime_ns)
    mac_functions = {f.start: _count_macs(f.insns) > 0 for f in functions}
    out: Dict[str, List[Loop]] = {}
    for f in functions:
        out.setdefault(f.isa, []).extend(_mac_loops_of(f, mac_functions))
    return out


def mac_loops(lib: Path) -> Dict[str, List[Loop]]:
    """ISA -> the loops of its kernels that multiply-accumulate, see _mac_loops_of (cached per file and mtime)."""
    lib = Path(lib).resolve()
    return _mac_loops(str(lib), lib.stat().st_mtime_ns)


def is_instantiation(f: Function) -> bool:
    """The kernel template itself or a clone of it, not one of its lambdas or a `.cold` part."""
    return "::{lambda" not in f.name and "[clone .cold" not in f.name


def format_loop(loop: Loop, limit: int = 16) -> str:
    lines = [loop.where()]
    for label, insns in (("vector<->stack", loop.vector_stack), ("out-of-line MAC call", loop.mac_calls),
                         ("GPR<->stack (allowed)", loop.gpr_stack)):
        lines += [f"    {label}: {i.addr:x}: {i.text}" for i in insns[:limit]]
        if len(insns) > limit:
            lines.append(f"    {label}: ... and {len(insns) - limit} more")
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    if argv:
        lib = Path(argv[0])
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from cnnkernels._library import CPU_LIB as lib
    bad = 0
    for isa, loops in mac_loops(lib).items():
        failing = [loop for loop in loops if loop.failures]
        bad += len(failing)
        print(f"== {isa}: {len(loops)} multiply-accumulate loops, {len(failing)} with vectors in memory")
        for loop in loops:
            print(("FAIL " if loop.failures else "ok   ") + format_loop(loop))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

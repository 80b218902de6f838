"""llvm-mca's prediction for the fp32 conv microkernel's inner loop, per ISA and CPU model.

Takes the innermost loop with the most FMAs out of the compiled `conv_tile<float, float, MR>` (MR = 12 for AVX-512,
6 for AVX2: 24 resp. 12 FMAs per iteration), as bench/disasm.py finds it, and asks llvm-mca how many cycles an
iteration takes on each core. Against the core's FMA peak that says how much of the peak the loop can reach at best
(operands in L1, no front-end or memory stalls), independently of the machine this runs on.

    python bench/mca.py [--lib LIB] [--all] [--iterations N] [--show-asm]

By default the loops of the full-tile function (GCC's .constprop clone with mr = MR where there is one; conv_rows
runs it for every full tile); --all adds those of the generic function (leftover tiles, and every tile of the type
pairs without a clone). Column `in` is the loop's nesting depth in conv_tile, which tells conv_accumulate's three
reductions apart: 0 = the 1x1 GEMM, 1 = a kernel row with kW merged into the reduction, 2 = one kernel tap at a time
(tiles at the image border, dilation, strided channels).

Read the predictions with llvm-mca 19's models in mind: `model` is what the model itself allows for the FMAs alone.
It gives a 512-bit FMA one per cycle on sapphirerapids (the hardware has two FMA units), znver5 gets the same
numbers as znver4, and the Zen 4 model sends a 512-bit broadcast load through an FP pipe that the FMAs also use.
Needs llvm-mca-19 (Debian: apt-get install llvm-19).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import disasm

MCA = "llvm-mca-19"
TILE = {"AVX512": ("conv_tile<float, float, 12>", 16), "AVX2": ("conv_tile<float, float, 6>", 8)}  # symbol, lanes
CPUS = {"AVX512": ("znver4", "znver5", "skylake-avx512", "sapphirerapids"),
        "AVX2": ("znver3", "haswell", "znver4", "sapphirerapids")}
# fp32 FLOP/cycle of the FMA units for code of that ISA: Zen 4 runs a 512-bit FMA as two 256-bit halves on its two
# 256-bit pipes, so AVX-512 gains nothing over AVX2 there; Zen 5 and the Xeons (two 512-bit FMA units) double it.
PEAK = {("AVX512", "znver4"): 32, ("AVX512", "znver5"): 64, ("AVX512", "skylake-avx512"): 64,
        ("AVX512", "sapphirerapids"): 64, ("AVX2", "znver3"): 32, ("AVX2", "haswell"): 32, ("AVX2", "znver4"): 32,
        ("AVX2", "sapphirerapids"): 32}


def hot_loops(lib: Path, isa: str, every: bool) -> List[disasm.Loop]:
    symbol = TILE[isa][0]
    loops = [loop for loop in disasm.mac_loops(lib).get(isa, []) if f"::{symbol}(" in loop.function.name]
    if not loops:
        return []
    most = max(loop.fmas for loop in loops)
    loops = [loop for loop in loops if loop.fmas == most]
    if every:
        return loops
    clones = [loop for loop in loops if "[clone .constprop" in loop.function.name]
    return clones or loops


def to_asm(loop: disasm.Loop) -> str:
    """The loop as llvm-mca input, from its header on: AT&T without addresses, jumps to labels (llvm-mca runs the
    block as a straight line and ignores where a branch goes)."""
    first = next(k for k, i in enumerate(loop.insns) if i.addr == loop.header)
    lines = [".Lloop:"]
    for i in loop.insns[first:] + loop.insns[:first]:
        t = i.target()
        if i.mnemonic.startswith("nop"):
            lines.append("  nop")  # padding; objdump's `cs nopw` spelling is two instructions to llvm-mc
        elif t is not None and i.mnemonic.startswith("j"):
            lines.append(f"  {i.mnemonic} {'.Lloop' if t[0] == loop.header else '.Lout'}")
        else:
            lines.append(f"  {i.mnemonic} {i.operands}".rstrip())
    lines.append(".Lout:")
    return "\n".join(lines) + "\n"


def fma_only(loop: disasm.Loop) -> str:
    """The loop's FMAs alone: what the CPU model itself takes as the FMA peak (llvm-mca 19 gives a 512-bit FMA a
    throughput of one per cycle on sapphirerapids, znver4 and znver5, two on skylake-avx512)."""
    return ".Lloop:\n" + "".join(f"  {i.mnemonic} {i.operands}\n" for i in loop.insns if disasm._FMA.match(i.mnemonic))


def run_mca(asm: str, cpu: str, iterations: int) -> Dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".s") as f:
        f.write(asm)
        f.flush()
        out = subprocess.run([MCA, "-mtriple=x86_64-unknown-linux-gnu", f"-mcpu={cpu}", f"-iterations={iterations}",
                              "-summary-view", "-instruction-info=false", f.name],
                             check=True, capture_output=True, text=True).stdout
    fields = {}
    for key in ("Iterations", "Instructions", "Total Cycles", "Block RThroughput"):
        m = re.search(rf"^{key}:\s+([\d.]+)", out, re.M)
        if not m:
            raise RuntimeError(f"llvm-mca output without '{key}':\n{out}")
        fields[key] = float(m.group(1))
    return fields


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", type=Path, help="the library (default: the one cnnkernels loads, see "
                                             "CNNKERNELS_LIBRARY_DIR)")
    ap.add_argument("--all", action="store_true", help="also the generic function's loops (leftover tiles)")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--show-asm", action="store_true", help="print the llvm-mca input of each loop")
    args = ap.parse_args(argv)
    if shutil.which(MCA) is None:
        print(f"{MCA} not found: install it with `apt-get install llvm-19` (Debian/Ubuntu) and run again",
              file=sys.stderr)
        return 2
    lib = args.lib
    if lib is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from cnnkernels._library import CPU_LIB as lib
    print(f"library: {lib}")
    header = (f"{'ISA':7} {'cpu':15} {'loop':26} {'in':>2} {'insns':>5} {'RThru':>6} {'cyc/it':>6} {'FMAs':>4} "
              f"{'FLOP/cyc':>8} {'peak':>4} {'%peak':>5} {'model':>5} {'%model':>6}  vec<->stack")
    print(header)
    missing = 0
    for isa in TILE:
        loops = hot_loops(lib, isa, args.all)
        if not loops:
            print(f"{isa:7} no {TILE[isa][0]} loop with FMAs in {lib}")
            missing += 1
            continue
        for loop in loops:
            asm = to_asm(loop)
            if args.show_asm:
                print(f"# {loop.where()}\n{asm}")
            clone = "c" if "[clone .constprop" in loop.function.name else " "
            where = f"{loop.start:#x}..{loop.end:#x}{clone}"
            for cpu in CPUS[isa]:
                r = run_mca(asm, cpu, args.iterations)
                cycles = r["Total Cycles"] / r["Iterations"]
                flops = loop.fmas * TILE[isa][1] * 2 / cycles
                peak = PEAK[(isa, cpu)]
                f = run_mca(fma_only(loop), cpu, args.iterations)
                model = loop.fmas * TILE[isa][1] * 2 / (f["Total Cycles"] / f["Iterations"])
                print(f"{isa:7} {cpu:15} {where:26} {loop.depth:2d} {r['Instructions'] / r['Iterations']:5.0f} "
                      f"{r['Block RThroughput']:6.2f} {cycles:6.2f} {loop.fmas:4d} {flops:8.1f} {peak:4d} "
                      f"{100 * flops / peak:4.0f}% {model:5.0f} {100 * flops / model:5.0f}%  "
                      f"{len(loop.vector_stack)}")
    print("loop: address range in the library, c = the .constprop clone (full tiles); RThru: llvm-mca's Block "
          "RThroughput (cycles per iteration from port pressure alone); cyc/it: simulated total cycles / iterations; "
          "peak: the core's fp32 FMA FLOP/cycle; model: the FLOP/cycle llvm-mca predicts for the loop's FMAs alone")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())

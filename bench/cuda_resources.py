"""Per-kernel resource usage of the CUDA library: registers, stack frame, local, shared and constant memory, per
architecture, read from `cuobjdump -res-usage` (the cubins only; PTX is compiled by the driver and has no figures).

A CUDA kernel whose registers do not fit keeps values in local memory (the stack frame): still correct, so no test of
results sees it, but every spill is a global-memory round trip through L1. The build prints this table after linking
libcnnkernels_cuda.so (CMakeLists.txt) and writes it to cuda_resource_usage.txt beside the library;
tests/packaging/test_build.py fails when one of HOT_KERNELS has a stack frame.

    python bench/cuda_resources.py [LIB] [--out FILE] [--cuobjdump PATH] [--hot]

STACK is the whole per-thread stack frame: register spills, and also local arrays that are indexed at run time and
call frames of functions that were not inlined. ptxas -v (nvcc -Xptxas -v) splits it into spill stores and loads; all
three are local memory, so the check does not need the split.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

# The kernels that carry the model's work (GEMM / fused kernels and the elementwise join), by source file and kernel
# name (the function name without namespace and template arguments). Every kernel of the library must be listed here or
# in COLD_KERNELS: a new kernel is classified, never skipped silently.
HOT_KERNELS: Dict[str, Tuple[str, ...]] = {
    "add_relu_kernel.cu": ("add_relu_kernel", "add_relu_vec_kernel"),
    "conv2d_act_kernel.cu": ("conv_gemm_kernel", "depthwise_kernel", "depthwise_tile_kernel"),
    "dwsep_conv2d_kernel.cu": ("conv_gemm_kernel", "dwsep_tile_kernel"),
    "inception_block_kernel.cu": ("conv_gemm_kernel",),
    "inverted_residual_kernel.cu": ("inverted_residual_kernel",),
    "mbconv_kernel.cu": ("mbconv_depthwise_kernel", "se_gate_kernel", "conv_gemm_kernel"),
    "up_concat_conv_kernel.cu": ("up_concat_conv_kernel",),
}
# Detection post-processing: one launch per image over at most a few thousand boxes, never a model's time.
COLD_KERNELS: Dict[str, Tuple[str, ...]] = {
    "boxes_kernel.cu": ("box_iou_kernel", "nms_mask_kernel"),
}

_ARCH = re.compile(r"^arch = (sm_\w+)")
_IDENT = re.compile(r"^identifier = (.+)$")
_FUNCTION = re.compile(r"^\s*Function (\S+):$")
_FIELD = re.compile(r"([A-Z]+(?:\[\d+\])?):(\d+)")


@dataclass(frozen=True)
class Usage:
    arch: str      # sm_80
    source: str    # inverted_residual_kernel.cu
    mangled: str
    name: str      # demangled, without namespaces and parameters: inverted_residual_kernel<__half>
    kernel: str    # the function name alone: inverted_residual_kernel
    reg: int
    stack: int
    local: int
    shared: int    # static shared memory (the GEMM kernels' tiles are dynamic and show 0)
    constant: int  # CONSTANT[0]: the kernel's parameters and what the compiler put beside them

    @property
    def hot(self) -> bool:
        return self.kernel in HOT_KERNELS.get(self.source, ())

    @property
    def classified(self) -> bool:
        return self.hot or self.kernel in COLD_KERNELS.get(self.source, ())

    def line(self) -> str:
        return (f"{self.arch:<6} REG {self.reg:>3}  STACK {self.stack:>4}  LOCAL {self.local:>4}  "
                f"SHARED {self.shared:>5}  CONST0 {self.constant:>4}  {self.source}: {self.name}")


def find_cuobjdump() -> Optional[str]:
    """cuobjdump from PATH, the pip package nvidia-cuda-cuobjdump (nvidia/cu*/bin) or the CUDA toolkit."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import nvidia
        for base in nvidia.__path__:
            for cand in sorted(Path(base).glob("cu*/bin/cuobjdump"), reverse=True):
                return str(cand)
    except ImportError:
        pass
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "cuobjdump").exists():
            return str(Path(home) / "bin" / "cuobjdump")
    return None


def _demangle(names: List[str]) -> List[str]:
    """Itanium names through c++filt (binutils), else cu++filt (CUDA toolkit); unchanged when neither is found."""
    tool = shutil.which("c++filt") or shutil.which("cu++filt")
    if not tool or not names:
        return list(names)
    r = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True, text=True)
    out = r.stdout.splitlines()
    return out if r.returncode == 0 and len(out) == len(names) else list(names)


def _short(demangled: str) -> str:
    """'void cnnkernels::cuda::(anonymous namespace)::k<float>(Args, bool)' -> 'k<float>'."""
    s = demangled[5:] if demangled.startswith("void ") else demangled
    depth = 0
    for i, ch in enumerate(s):  # drop the parameter list: the first '(' outside template arguments
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and not s.startswith("(anonymous namespace)", i):
            s = s[:i]
            break
    s = s.replace("(anonymous namespace)::", "").replace("cnnkernels::cuda::", "")
    return s.replace(" >", ">")


def parse(text: str) -> List[Usage]:
    """Every (cubin, kernel) of `cuobjdump -res-usage` output."""
    raw = []
    arch = source = function = None
    for line in text.splitlines():
        if m := _ARCH.match(line):
            arch = m.group(1)
        elif m := _IDENT.match(line):
            source = Path(m.group(1).strip()).name
        elif m := _FUNCTION.match(line):
            function = m.group(1)
        elif function and "REG:" in line:
            fields = {k: int(v) for k, v in _FIELD.findall(line)}
            raw.append((arch, source, function, fields))
            function = None
    names = _demangle([f for _, _, f, _ in raw])
    usages = []
    for (arch, source, mangled, fields), demangled in zip(raw, names):
        name = _short(demangled)
        usages.append(Usage(arch=arch or "?", source=source or "?", mangled=mangled, name=name,
                            kernel=name.split("<", 1)[0], reg=fields.get("REG", 0), stack=fields.get("STACK", 0),
                            local=fields.get("LOCAL", 0), shared=fields.get("SHARED", 0),
                            constant=fields.get("CONSTANT[0]", 0)))
    return usages


def read(library: Path, cuobjdump: str) -> List[Usage]:
    r = subprocess.run([cuobjdump, "-res-usage", str(library)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{cuobjdump} -res-usage {library} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return parse(r.stdout)


def report(usages: Iterable[Usage]) -> str:
    """One line per kernel and architecture, grouped by source file, then kernel, then architecture."""
    rows = sorted(usages, key=lambda u: (u.source, u.name, int(re.sub(r"\D", "", u.arch) or 0)))
    spilling = [u for u in rows if u.hot and (u.stack or u.local)]
    lines = [u.line() + ("   <-- local memory in a hot kernel" if u in spilling else "") for u in rows]
    lines.append(f"{len(rows)} kernel cubins, {len(spilling)} hot ones with a stack frame or local memory")
    return "\n".join(lines) + "\n"


def _default_library() -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cnnkernels._library import LIB_DIR
    return LIB_DIR / "libcnnkernels_cuda.so"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("library", nargs="?", type=Path, help="libcnnkernels_cuda.so (default: the package's)")
    ap.add_argument("--out", type=Path, help="also write the table to this file")
    ap.add_argument("--cuobjdump", help="the cuobjdump to run (default: found like find_cuobjdump)")
    ap.add_argument("--hot", action="store_true", help="only the kernels of HOT_KERNELS")
    ap.add_argument("--build-step", action="store_true",
                    help="as the build's post-link step: a missing tool or a failure is reported, never an error")
    args = ap.parse_args(argv)
    lib = args.library or _default_library()
    tool = args.cuobjdump or find_cuobjdump()
    header = f"cnnkernels: CUDA resource usage per kernel and architecture ({lib.name}, cuobjdump -res-usage)"
    if tool is None:
        print(f"{header}: cuobjdump not found (pip install nvidia-cuda-cuobjdump), no table", flush=True)
        return 0 if args.build_step else 1
    try:
        usages = read(lib, tool)
    except (OSError, RuntimeError) as e:
        print(f"{header}: {e}", flush=True)
        return 0 if args.build_step else 1
    if args.hot:
        usages = [u for u in usages if u.hot]
    text = report(usages)
    print(header + "\n" + text, end="", flush=True)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build driver: runs CMake (CMakeLists.txt is the single description of what is compiled) and puts the resulting
libraries into the package as cnnkernels/lib/*.so.

Environment:
  USE_CUDA=0              build CPU-only
  FORCE_CUDA=1            fail if the CUDA kernels cannot be built (no nvcc, CPU-only torch)
  TORCH_CUDA_ARCH_LIST    CUDA architectures (default "7.5;8.0;8.6;8.9;9.0+PTX")
  CNNKERNELS_SANITIZE     e.g. "address,undefined" for a sanitizer build of the CPU library
  MAX_JOBS                parallel compile jobs
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _env_flag(name):
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    return v.strip().lower() not in ("0", "false", "off", "no")


def _cuda_home():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return Path(home)
    nvcc = shutil.which("nvcc")
    if nvcc:
        # nvcc may be a wrapper script; ask it for its real toolkit root.
        try:
            out = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                                 capture_output=True, text=True).stderr
            for line in out.splitlines():
                if "TOP=" in line:
                    top = Path(line.split("TOP=", 1)[1].strip()).resolve()
                    if (top / "bin" / "nvcc").exists():
                        return top
        except OSError:
            pass
        return Path(nvcc).resolve().parent.parent
    if Path("/usr/local/cuda/bin/nvcc").exists():
        return Path("/usr/local/cuda")
    return None


def resolve_cuda():
    """Returns (build_cuda, cuda_home, reason). Decided from torch's build and the toolkit, never from a visible GPU."""
    import torch

    use, force = _env_flag("USE_CUDA"), _env_flag("FORCE_CUDA")
    home = _cuda_home()
    if use is False and not force:
        return False, home, "USE_CUDA=0"
    if torch.version.cuda is None:
        reason = f"torch {torch.__version__} is a CPU-only build"
    elif home is None:
        reason = "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)"
    else:
        return True, home, f"torch CUDA {torch.version.cuda}, toolkit {home}"
    if force:
        raise RuntimeError(f"FORCE_CUDA=1 but the CUDA kernels cannot be built: {reason}")
    return False, home, reason


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import torch

        build_cuda, cuda_home, reason = resolve_cuda()
        build_temp = Path(self.build_temp) / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        out_dir = build_temp / "out"
        cfg = "Debug" if self.debug else "Release"
        args = [
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
            f"-DCNNKERNELS_OUTPUT_DIR={out_dir}",
            f"-DCNNKERNELS_CUDA={'ON' if build_cuda else 'OFF'}",
            f"-DCNNKERNELS_SANITIZE={os.environ.get('CNNKERNELS_SANITIZE', '')}",
        ]
        if build_cuda:
            args.append(f"-DCMAKE_CUDA_COMPILER={cuda_home / 'bin' / 'nvcc'}")
        if shutil.which("ninja"):
            args.append("-GNinja")
        print(f"cnnkernels build: torch {torch.__version__} (CUDA {torch.version.cuda}), "
              f"CUDA kernels {'ON' if build_cuda else 'OFF'} ({reason}), "
              f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '<default>')}, "
              f"sanitize={os.environ.get('CNNKERNELS_SANITIZE', '') or 'none'}", flush=True)
        # A library left from an earlier configuration (e.g. CUDA before USE_CUDA=0) must not be shipped.
        for stale in out_dir.glob("*.so"):
            stale.unlink()
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_temp), *args], check=True)
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)
        subprocess.run(["cmake", "--build", str(build_temp), "--parallel", jobs], check=True)

        # The package's lib/ folder: libraries and the build config read at import.
        pkg_dir = Path(self.get_ext_fullpath(ext.name)).parent
        lib_dir = pkg_dir / "lib"
        if lib_dir.exists():
            shutil.rmtree(lib_dir)
        lib_dir.mkdir(parents=True)
        for f in out_dir.glob("*.so"):
            shutil.copy2(f, lib_dir / f.name)
        shutil.copy2(out_dir / "_build_config.json", lib_dir / "_build_config.json")
        # setuptools expects the extension's own file; it is the CPU library under its Python extension name, unused.
        Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)

    def get_outputs(self):
        return []

    def copy_extensions_to_source(self):
        # `build_ext --inplace` / editable installs: bring lib/ next to the sources.
        src_pkg = Path(self.get_finalized_command("build_py").get_package_dir("cnnkernels"))
        built = Path(self.build_lib) / "cnnkernels" / "lib"
        if (src_pkg / "lib").exists():
            shutil.rmtree(src_pkg / "lib")
        shutil.copytree(built, src_pkg / "lib")


setup(
    ext_modules=[CMakeExtension("cnnkernels._placeholder")],
    cmdclass={"build_ext": CMakeBuild},
)

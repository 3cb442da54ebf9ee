"""Build the compiled kernels of cyconv.

Every ``cyconv/_kernels/*.pyx`` file becomes one extension module.

Environment variables
---------------------
CYCONV_BOUNDSCHECK=1
    Compile with Cython's bounds, wraparound and initialisation checks on,
    so that an out-of-range index raises ``IndexError`` instead of reading
    stray memory.  For debugging and for proving that validation covers
    every index; the shipped build has them off.
CYCONV_NATIVE=1
    Add ``-march=native`` for a local build tuned to this processor.  Never
    used for anything that ships.
CYCONV_NO_OPENMP=1
    Build without OpenMP even where the compiler supports it.
CYCONV_BUILD_JOBS=N
    Compile at most N extension modules at once (default: one per core).
    ``build_ext -j N`` on the command line wins.

The shipped wheel is built by ``tools/build_wheel.sh``, which passes
``CFLAGS=-g0`` (appended after Python's own flags, so it wins over their
``-g``): debug information would make the wheel several times larger.
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools._distutils.ccompiler import new_compiler
from setuptools._distutils.errors import CompileError, LinkError
from setuptools._distutils.sysconfig import customize_compiler

HERE = Path(__file__).parent
# The module that holds the Cython utility code every kernel module shares.
SHARED_UTILITY = "cyconv._kernels._cyutility"


def _flag(name):
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def _build_jobs():
    jobs = os.environ.get("CYCONV_BUILD_JOBS", "")
    if not jobs:
        return os.cpu_count() or 1
    if not jobs.isdigit() or int(jobs) < 1:
        sys.exit(f"CYCONV_BUILD_JOBS must be a positive integer, got {jobs!r}")
    return int(jobs)


class ParallelBuildExt(build_ext):
    """build_ext compiling the kernels side by side.

    Each kernel is one C file that takes seconds to compile; setuptools
    compiles them one after another unless ``build_ext`` is given
    ``--parallel``, which ``pip install`` has no way to pass.
    """

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = _build_jobs()


def _openmp_flags():
    """Return (compile_args, link_args) for OpenMP, or empty lists if the
    compiler cannot build and link a tiny OpenMP program."""
    if _flag("CYCONV_NO_OPENMP"):
        return [], []
    if sys.platform == "win32":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    source = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "check_openmp.c")
        with open(src, "w") as f:
            f.write(source)
        for compile_args, link_args in candidates:
            try:
                objects = compiler.compile([src], output_dir=tmp, extra_postargs=compile_args)
                compiler.link_executable(
                    objects, "check_openmp", output_dir=tmp, extra_postargs=link_args
                )
            except (CompileError, LinkError):
                continue
            return compile_args, link_args
    print("cyconv: the compiler has no OpenMP; building single-threaded kernels", file=sys.stderr)
    return [], []


def _extra_args(module):
    """Flags of one module.  The direct convolution's variants (and the
    fused convolution and pooling built on them), and batch
    normalisation's clones, must compute the same operations in the same
    order, bitwise: no contraction of a * b + c into fused multiply-adds
    beyond the ones written out; and the optimizers' updates must be
    numpy's operations to the bit (their square roots vectorised: errno is
    never read)."""
    if sys.platform == "win32":
        return []
    if module in ("_conv_direct", "_conv_pool", "_batchnorm"):
        return ["-ffp-contract=off"]
    if module == "_optim":
        return ["-ffp-contract=off", "-fno-math-errno"]
    return []


def _extensions():
    checks = _flag("CYCONV_BOUNDSCHECK")
    directives = {
        "language_level": 3,
        "boundscheck": checks,
        "wraparound": checks,
        "initializedcheck": checks,
        "cdivision": True,
    }
    omp_compile, omp_link = _openmp_flags()
    compile_args = [] if sys.platform == "win32" else ["-O3"]
    if _flag("CYCONV_NATIVE"):
        compile_args.append("-march=native")
    sources = sorted((HERE / "cyconv" / "_kernels").glob("*.pyx"))
    extensions = [
        Extension(
            "cyconv._kernels." + path.stem,
            [str(path.relative_to(HERE))],
            include_dirs=[np.get_include(), str(HERE / "cyconv" / "_kernels")],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=compile_args + omp_compile + _extra_args(path.stem),
            extra_link_args=omp_link,
            # hand-written headers: a change to one rebuilds the modules
            depends=[str(h.relative_to(HERE)) for h in sorted(path.parent.glob("*.h"))],
        )
        for path in sources
    ]
    # Cython's own utility code (typed memoryviews above all) goes into one
    # shared module rather than a copy in every module: it was the larger
    # part of the smaller modules, and several hundred KB of the wheel.
    extensions.append(Extension(SHARED_UTILITY, ["cyconv/_kernels/_cyutility.c"],
                                extra_compile_args=compile_args))
    # Generated C from a build with other directives would otherwise be
    # reused as up to date: regenerate whenever checks are asked for.
    # Cython translates the .pyx files side by side too.
    return cythonize(extensions, compiler_directives=directives, quiet=True, force=checks,
                     nthreads=_build_jobs(), shared_utility_qualified_name=SHARED_UTILITY)


setup(ext_modules=_extensions(), cmdclass={"build_ext": ParallelBuildExt})

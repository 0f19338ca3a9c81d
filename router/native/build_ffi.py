"""cffi build script for the data plane (out-of-line API mode).

setuptools runs it through ``cffi_modules`` when the package is installed.
``python -m router.native.build_ffi --sanitize OUTDIR`` builds a copy with
AddressSanitizer and UndefinedBehaviorSanitizer for the test suite, and
``--thread OUTDIR`` one with ThreadSanitizer for the worker tests (with
neither, an ordinary build into OUTDIR, e.g. to test a change while the
installed one is in use).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = sorted(p.name for p in HERE.glob("*.c"))
WARNINGS = ["-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wstrict-prototypes"]
# cffi's generated wrapper trips a few pedantic warnings of its own; the
# project's C files are held to the full set above through this list.
OPTIMIZE = ["-O2", "-fno-strict-aliasing", "-std=gnu11"]
SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer",
            "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
# ThreadSanitizer cannot be combined with ASan: a build of its own, for the
# worker tests (the data plane's lock against the workers' batches).
THREAD = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=thread"]


def make_builder(sanitize: bool = False, thread: bool = False, elsewhere: bool = False) -> FFI:
    """setuptools wants paths relative to the checkout; a build into another
    directory (``elsewhere``, and every sanitized one) absolute ones."""
    ffi = FFI()
    ffi.cdef((HERE / "rt.cdef").read_text())
    flags = WARNINGS + (THREAD if thread else SANITIZE if sanitize else OPTIMIZE)
    absolute = sanitize or thread or elsewhere
    ffi.set_source(
        "router.native._rt",
        '#include "rt.h"',
        sources=[str(Path("router/native") / s) for s in SOURCES]
        if not absolute
        else [str(HERE / s) for s in SOURCES],
        include_dirs=[str(HERE)] if absolute else ["router/native"],
        extra_compile_args=flags,
        # libpcap compiles and runs the capture filters (rt_capture_start).
        libraries=["pcap"],
        extra_link_args=(["-fsanitize=thread"] if thread else
                         ["-fsanitize=address,undefined"] if sanitize else []),
    )
    return ffi


ffibuilder = make_builder(sanitize=os.environ.get("RT_SANITIZE") == "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sanitize", action="store_true", help="ASan and UBSan")
    ap.add_argument("--thread", action="store_true", help="ThreadSanitizer")
    ap.add_argument("outdir", type=Path)
    args = ap.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    builder = make_builder(sanitize=args.sanitize, thread=args.thread, elsewhere=True)
    builder.compile(tmpdir=str(args.outdir), verbose=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The compiled data plane.  Only ``router.datapath`` imports this.

``RT_NATIVE_PATH`` may name a directory holding another build of ``_rt`` (the
test suite's AddressSanitizer/UBSan build); it is searched first.
"""

import os

if os.environ.get("RT_NATIVE_PATH"):
    __path__.insert(0, os.path.join(os.environ["RT_NATIVE_PATH"], "router", "native"))

from router.native._rt import ffi, lib

__all__ = ["ffi", "lib"]

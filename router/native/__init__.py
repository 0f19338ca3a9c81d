"""The data plane in C, and what Python reads of its headers.

Importing this package loads nothing compiled: ``names`` and ``records`` are
pure, and only ``router.datapath`` imports the compiled ``_rt``.

``RT_NATIVE_PATH`` may name a directory holding another build of ``_rt`` (the
test suite's AddressSanitizer/UBSan build); it is searched first.
"""

import os

if os.environ.get("RT_NATIVE_PATH"):
    __path__.insert(0, os.path.join(os.environ["RT_NATIVE_PATH"], "router", "native"))

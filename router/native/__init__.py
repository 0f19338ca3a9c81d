"""The compiled data plane.  Only ``router.datapath`` imports this."""

from router.native._rt import ffi, lib  # type: ignore[import-not-found]

__all__ = ["ffi", "lib"]

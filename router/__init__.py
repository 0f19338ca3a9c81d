"""A userspace NAT router over Linux TUN devices."""

__version__ = "0.1.0"

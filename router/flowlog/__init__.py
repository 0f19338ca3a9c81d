"""The flow and NAT log: connection events exported as IPFIX (ipfix.py
encodes, exporter.py paces and sends)."""

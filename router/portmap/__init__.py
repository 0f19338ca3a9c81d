"""Port mapping for the LAN: PCP (RFC 6887), NAT-PMP (RFC 6886) and UPnP
IGD, from one table of mappings that the data plane enforces
(``native/portmap.c``).  See docs/portmap.md.

  table.py        the mappings and every rule about them (one home)
  pcp_wire.py     PCP bytes; natpmp_wire.py NAT-PMP bytes (pure, fuzzed)
  pcp.py          PCP requests against the table; natpmp.py NAT-PMP's
  server.py       UDP 5351: dispatch, rate limits, announcements
  upnp.py         the UPnP IGD device (async-upnp-client, aiohttp)
  store.py        the state file that keeps mappings across restarts
  service.py      what the running router starts, reloads and stops
"""

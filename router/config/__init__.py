"""The router's configuration: TOML in, frozen dataclasses out.

Pure, except for reading the file: nothing here touches devices or loads
the data plane, so a bad file can be rejected while the router keeps running
on the old one, and ``routerctl`` can use it.  Every key is documented in
``docs/config.md``.

  model.py    one dataclass per TOML section; every default, range and choice
  reader.py   walking the parsed document, values with their key paths
  parse.py    the document, scalar sections, interfaces, routes, conntrack
  rules.py    NAT, load balancers, the firewall
  source.py   the file's bytes, read safely, and off the event loop
  show.py     the config as TOML data again, and its warnings
"""

from router.config.model import (
    MAX_TIMEOUT,
    PROTOCOLS,
    Backend,
    Config,
    ConfigError,
    Conntrack,
    Control,
    Dataplane,
    Firewall,
    Interface,
    LoadBalancer,
    Log,
    Masquerade6,
    Metrics,
    Nat,
    Npt6,
    Policy,
    PortForward,
    Route,
    Route6,
    Rule,
    Service,
    SourceNat,
)
from router.config.parse import parse
from router.config.show import rule_dict, to_dict, warnings
from router.config.source import CONFIG_READ_TIMEOUT, load, read, read_config

__all__ = [
    "CONFIG_READ_TIMEOUT", "MAX_TIMEOUT", "PROTOCOLS", "Backend", "Config", "ConfigError",
    "Conntrack", "Control", "Dataplane", "Firewall", "Interface", "LoadBalancer", "Log",
    "Masquerade6", "Metrics", "Nat", "Npt6", "Policy", "PortForward", "Route", "Route6", "Rule",
    "Service", "SourceNat", "load", "parse", "read", "read_config", "rule_dict", "to_dict",
    "warnings",
]

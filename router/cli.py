"""``router``: the daemon and its offline tools.

    router run   [-c FILE]   run the router
    router check [-c FILE]   validate a config file; exit 0 if good, 1 if not
    router version
    router helpers -c FILE   (started by the router itself, as root, when it
                             drops to a service user: runs the WAN's DHCP
                             clients and dnsmasq until its input ends; see
                             helpers.py)
"""

from __future__ import annotations

import argparse
import sys

from router import __version__

DEFAULT_CONFIG = "/etc/router/router.toml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="router", description="Userspace NAT router over TUN.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, helptext in (("run", "run the router"), ("check", "validate a config file"),
                           ("helpers", "(internal) the router's root helper process")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                       help=f"config file (default {DEFAULT_CONFIG})")
    sub.add_parser("version", help="print the version")
    args = ap.parse_args(argv)

    if args.cmd == "version":
        print(f"router {__version__}")
        return 0

    from router import config, log

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        print(f"router: {e}", file=sys.stderr)
        return 1
    for warning in config.warnings(cfg):
        print(f"router: warning: {args.config}: {warning}", file=sys.stderr)
    if args.cmd == "check":
        from router import state

        bad = state.check_path(cfg.conntrack.state_file) if cfg.conntrack.state_file else None
        if bad:
            print(f"router: {args.config}: conntrack.state_file: {cfg.conntrack.state_file} "
                  f"{bad}", file=sys.stderr)
            return 1
        n_routes = len(cfg.routes) + len(cfg.routes6)
        n_nat = len(cfg.nat.rules) + len(cfg.nat.masquerade6) + len(cfg.nat.npt6)
        print(f"{args.config}: ok ({len(cfg.interfaces)} interfaces, {n_routes} routes, "
              f"{n_nat} NAT rules, zones: {', '.join(cfg.zones)})")
        return 0

    if args.cmd == "helpers":
        # Its standard output is the router's pipe: the log goes to stderr.
        log.setup(cfg.log.level, cfg.log.format, "stderr")
        import uvloop

        from router import helpers
        return uvloop.run(helpers.serve(args.config))
    log.setup(cfg.log.level, cfg.log.format, cfg.log.output)
    _raise_open_files()
    import uvloop

    from router.app import Router
    from router.datapath import DatapathError
    from router.privs import PrivError
    from router.tun import TunError

    try:
        router = Router(cfg)
        router.catch_early_signals()
        router.open_devices()
        try:
            router.setup_privileges()
            router.restore_state()
            uvloop.run(router.run())
        finally:
            router.close_devices()
    except (TunError, DatapathError, PrivError, OSError) as e:
        log.get("router").error("router.failed", error=str(e))
        print(f"router: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _raise_open_files() -> None:
    """Takes the open-file limit up to its hard limit (the usual soft one,
    1024, is small for a gateway).  Clients of the control socket and the
    metrics are capped anyway, so that none can use up what is left."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())

"""The ``lanthorn`` command: serve, config, plugins, import, check, and plugins' commands."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Sequence
from contextlib import closing

from . import __version__
from .config import ConfigError, default_config_text, load_config
from .errors import LanthornError
from .plugins import make_plugin_host

log = logging.getLogger("lanthorn")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (ConfigError, LanthornError) as exc:
        print(f"lanthorn: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanthorn", description="A DICOM server built as a plugin host.")
    parser.add_argument("--version", action="version", version=f"lanthorn {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = _command(commands, "serve", "run the REST API and the DICOM listener", _serve)
    serve.add_argument("--workers", type=int, help="server processes (default: Workers option)")
    noise = serve.add_mutually_exclusive_group()
    noise.add_argument("--verbose", action="store_true", help="log at INFO level")
    noise.add_argument("--trace", action="store_true", help="log at DEBUG level")

    _command(commands, "config", "print a commented default configuration", _print_config,
             config=False)
    _command(commands, "plugins", "list installed plugins and their status", _plugins)
    _command(commands, "passwd", "print a password hash for RegisteredUsers (the password "
             "is asked for, or read from standard input)", _passwd, config=False)

    importer = _command(commands, "import", "import DICOM files, folders and ZIP archives",
                        _import)
    importer.add_argument("paths", nargs="+", metavar="PATH")

    check = _command(commands, "check", "verify that index and storage agree", _check)
    check.add_argument("--repair", action="store_true",
                       help="remove orphan files and index rows whose file is lost")

    token = commands.add_parser("token", help="create, list and revoke API tokens",
                                description="create, list and revoke API tokens")
    actions = token.add_subparsers(title="actions", metavar="ACTION")
    create = _command(actions, "create", "print a new token for a user (shown only once)",
                      _token_create)
    create.add_argument("--user", required=True, help="the registered user it acts for")
    create.add_argument("--role", help="a narrower role than the user's own")
    create.add_argument("--days", type=float, help="valid for this many days (default: ever)")
    create.add_argument("--description", default="", help="what the token is for")
    listing = _command(actions, "list", "list tokens (never their secrets)", _token_list)
    listing.add_argument("--user", help="only this user's tokens")
    revoke = _command(actions, "revoke", "revoke a token by its ID", _token_revoke)
    revoke.add_argument("id", metavar="ID")

    for command in _plugin_commands(parser):
        sub = _command(commands, command.name, command.help, lambda a, c=command: c.run(a))
        command.configure(sub)
    return parser


def _command(commands, name: str, help: str, run, config: bool = True):  # noqa: ANN001, ANN202, A002
    sub = commands.add_parser(name, help=help, description=help)
    if config:
        sub.add_argument("--config", metavar="FILE|FOLDER",
                         help="configuration file or folder (default: $LANTHORN_CONFIG)")
    sub.set_defaults(run=run)
    return sub


def _plugin_commands(parser: argparse.ArgumentParser) -> list:
    try:
        host = make_plugin_host()
    except LanthornError as exc:
        log.error("%s", exc)
        return []
    return [c for batch in host.hook.register_commands(parser=parser) for c in batch]


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if getattr(args, "trace", False) else \
        logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("lanthorn").setLevel(min(level, logging.INFO))


def _server(args: argparse.Namespace):  # noqa: ANN202 - a Server (imported lazily: fast CLI)
    from .server import Server

    return Server(load_config(args.config))


def _serve(args: argparse.Namespace) -> int:
    from .serve import serve

    config = load_config(args.config)
    return serve(config, workers=args.workers)


def _print_config(args: argparse.Namespace) -> int:
    sys.stdout.write(default_config_text())
    return 0


def _passwd(args: argparse.Namespace) -> int:
    from .auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("lanthorn: error: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("lanthorn: error: empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from .auth import ANONYMOUS
    from .tokens import create

    with closing(_server(args)) as server:
        record, secret = create(server, ANONYMOUS, args.user, args.role,
                                None if args.days is None else args.days * 86400,
                                args.description)
    print(f"{record.id} {secret}")
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from .auth import ANONYMOUS
    from .tokens import describe, listed

    with closing(_server(args)) as server:
        found = listed(server, ANONYMOUS, args.user)
    for record in map(describe, found):
        print(f"{record['ID']}  {record['User']:<16} {record['Role'] or '-':<8} "
              f"{record['Created']}  expires {record['Expires'] or 'never'}  "
              f"{record['Description']}")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from .auth import ANONYMOUS
    from .tokens import revoke

    with closing(_server(args)) as server:
        revoke(server, ANONYMOUS, args.id)
    return 0


def _plugins(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    host = make_plugin_host(extra=config["Plugins"], disabled=config["DisabledPlugins"],
                            base_dir=config.sources[0].parent if config.sources else None)
    for info in sorted(host.plugins.values(), key=lambda p: (p.source != "builtin", p.name)):
        status = info.status if not info.error else f"{info.status}: {info.error}"
        print(f"{info.name:<20} {info.version:<10} {info.source:<12} {status}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from .importer import import_paths

    server = _server(args)
    try:
        report = import_paths(server, args.paths, progress=sys.stderr.isatty())
    finally:
        server.close()
    print(report.summary())
    return 0 if not report.failures else 1


def _check(args: argparse.Namespace) -> int:
    from .check import check

    server = _server(args)
    try:
        report = check(server, repair=args.repair)
    finally:
        server.close()
    print(report.summary())
    return 0 if report.consistent or args.repair else 1

"""The ``sessiond`` command line.

::

    sessiond replay SESSION [--to OFFSET]       the session's event timeline (audit)
    sessiond export SESSION --format json|markdown|text
    sessiond projections rebuild                drop and rebuild the views from the log
    sessiond serve [--host 127.0.0.1] [--port 8000] [--log-level info]
                                                the HTTP API (see README "HTTP API")
    sessiond chat [--url URL [--api-key KEY] | --db PATH]
                                                a terminal chat (see gateway.chat)

Every command takes ``--db`` (default ``$SESSIOND_DB`` or ``./sessiond.db``) and
``--config``; ``serve``'s flags have the twins ``SESSIOND_HOST``,
``SESSIOND_PORT`` and ``SESSIOND_LOG_LEVEL``. Commands other than ``serve`` run as
the local operator, who sees every session.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from gateway import chat
from runtime import (
    ConfigError,
    DomainError,
    Principal,
    Runtime,
    RuntimeFault,
    Settings,
)

OPERATOR = Principal("operator", admin=True)
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _settings(args: argparse.Namespace) -> Settings:
    # A one-shot command runs no background supervisor: on a store other
    # processes serve, it must not take their supervisor lease.
    return Settings.from_env(db=args.db, config_path=args.config, supervisor_interval=0)


def _summary(event: dict[str, Any]) -> str:
    data = event["data"]
    kind = event["type"]
    if kind == "message_appended":
        length = len(data.get("content", ""))
        return f"{data.get('role')} message {data.get('message_id')} ({length} chars)"
    if kind == "rewound":
        target = data.get("checkpoint_id") or f"offset {data.get('to_offset')}"
        count = data.get("message_count")
        return f"head moved back to {target} ({count} messages visible)"
    if kind == "checkpoint_saved":
        return (
            f"checkpoint {data.get('checkpoint_id')} {data.get('name')!r} "
            f"at offset {data.get('offset')}"
        )
    if kind == "opened":
        parent = data.get("parent")
        origin = (
            f" forked from {parent['session_id']}@{parent['offset']}" if parent else ""
        )
        return f"agent {data.get('agent_id')}, user {data.get('user_id')}{origin}"
    # A summary's text is message content too.
    shown = {k: v for k, v in data.items() if k not in ("content", "text")}
    return orjson.dumps(shown).decode() if shown else ""


def replay(runtime: Runtime, session_id: str, to: int | None) -> int:
    """Print the session's log up to ``to``; message content is not printed."""
    after = 0
    while True:
        page = runtime.events(
            session_id, principal=OPERATOR, after=after, limit=500, include_expired=True
        )
        for event in page["events"]:
            if to is not None and event["offset"] > to:
                return EXIT_OK
            print(
                f"{event['offset']:>6}  {event['at']}  "
                f"{event['type']:<20} {_summary(event)}"
            )
            after = event["offset"]
        if not page["has_more"]:
            break
    if to is not None:
        state = runtime.state_at(session_id, to, principal=OPERATOR)
        print(
            f"\nat offset {to}: status {state['status']}, "
            f"{state['message_count']} messages visible, head {state['head']}"
        )
    return EXIT_OK


def export(runtime: Runtime, session_id: str, fmt: str) -> int:
    """Print the session's export."""
    document = runtime.export(session_id, principal=OPERATOR, format=fmt)
    if isinstance(document, str):
        print(document)
    else:
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK


def rebuild(runtime: Runtime) -> int:
    """Drop and rebuild the views from the log."""
    count = runtime.rebuild_projections()
    print(f"rebuilt the views of {count} sessions from the log")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sessiond``."""
    parser = argparse.ArgumentParser(
        prog="sessiond", description=__doc__.split("\n")[0]
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        help="SQLite file or postgresql:// DSN (default $SESSIOND_DB or ./sessiond.db)",
    )
    common.add_argument("--config", help="TOML config file (default $SESSIOND_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)

    replay_parser = commands.add_parser(
        "replay", parents=[common], help="print a session's event timeline"
    )
    replay_parser.add_argument("session")
    replay_parser.add_argument(
        "--to", type=int, metavar="OFFSET", help="stop at this offset"
    )

    export_parser = commands.add_parser(
        "export", parents=[common], help="export a session"
    )
    export_parser.add_argument("session")
    export_parser.add_argument(
        "--format", choices=["json", "markdown", "text"], default="json"
    )

    projections = commands.add_parser("projections", help="manage the read models")
    projection_commands = projections.add_subparsers(dest="action", required=True)
    projection_commands.add_parser(
        "rebuild", parents=[common], help="drop and rebuild the views from the log"
    )

    serve_parser = commands.add_parser(
        "serve", parents=[common], help="serve the HTTP API"
    )
    serve_parser.add_argument(
        "--host", help="address to bind (default $SESSIOND_HOST or 127.0.0.1)"
    )
    serve_parser.add_argument(
        "--port", type=int, help="port (default $SESSIOND_PORT or 8000)"
    )
    serve_parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default $SESSIOND_LOG_LEVEL or info)",
    )

    chat_parser = commands.add_parser(
        "chat", help="chat with an agent from the terminal"
    )
    chat.add_arguments(chat_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sessiond`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ConfigError as error:
        # the message names the agent and the field, never a secret
        print(f"sessiond: invalid configuration: {error}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    if args.command == "chat":
        return chat.main(args)
    if args.command == "serve":
        from gateway.server import serve  # uvicorn is only needed here

        return serve(
            Settings.from_env(
                db=args.db,
                config_path=args.config,
                host=args.host,
                port=args.port,
                log_level=args.log_level,
            )
        )
    try:
        with Runtime(_settings(args)) as runtime:
            if args.command == "replay":
                return replay(runtime, args.session, args.to)
            if args.command == "export":
                return export(runtime, args.session, args.format)
            return rebuild(runtime)
    except (RuntimeFault, DomainError) as error:
        print(f"sessiond: {error.code}: {error.detail}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

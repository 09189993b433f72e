"""The `flowtime` command line (SPEC §9). Exit codes: 0 ok, 2 bad input, 3 engine or server error.

Offline commands (`run`, `validate`) call the engine directly; client commands are thin layers
over the HTTP/WebSocket API.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from compat_api.cli.output import detach_stdout
from engine_live.errors import FlowTimeError, ModelError, OutputClosedError

EXIT_OK, EXIT_BAD_INPUT, EXIT_ENGINE = 0, 2, 3
PARAM_HELP = "a template parameter (repeatable); MODEL is then rendered from the template first"
# Subcommands registered by other modules (each `register(sub)`), with the name and help of each: the
# parser imports a module only for the command given, so that `flowtime --help` and `flowtime run` do
# not pay for httpx, rich, uvicorn and the settings (issue 16; tests check this table against them).
LAZY_COMMANDS: dict[str, tuple[tuple[str, str], ...]] = {
    "compat_api.cli.demo": (("demo", "serve plus a live run replaying the bundled microservices telemetry"),),
    "compat_api.cli.client": (("ingest", "replay a telemetry bundle into a live run"),),
    "compat_api.cli.stream": (("stream", "tail live runs"),),
    "compat_api.cli.offline": (
        ("compare", "compare two finished runs (ids or run folders) and write diff.json"),
        ("artifacts", "the artifact registry"),
        ("telemetry", "telemetry bundles"),
    ),
}


def _read_model(path: str, params: list[str] | None = None) -> tuple[str, Path, list[dict[str, object]]]:
    """The model text (a template rendered with `--param` values), its folder and template warnings."""
    from compat_api.cli.templating import render_file

    p = Path(path)
    try:
        text, folder = p.read_text(encoding="utf-8"), p.resolve().parent
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror or exc}") from None
    model, warnings = render_file(text, folder, params or [], p.name)
    return model, folder, warnings


def cmd_run(args: argparse.Namespace) -> int:
    """`flowtime run`: evaluate a model offline and write its artifacts."""
    from engine_live.plan.batch_run import run_model
    from snapshot_writer.artifacts import write_run_artifacts

    started = time.perf_counter()
    text, base, _ = _read_model(args.model, args.param)
    adjustments = None
    if args.adjustments:
        import orjson

        try:
            adjustments = orjson.loads(Path(args.adjustments).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ModelError(f"cannot read adjustments {args.adjustments}: {exc}") from None
        if not isinstance(adjustments, list):
            raise ModelError("adjustments: must be a JSON list (model/adjustments.json of a live run)")
    run = run_model(text, base_dir=base, deterministic_run_id=args.deterministic_run_id, adjustments=adjustments)
    res = run.result
    out = Path(args.out) if args.out else Path("runs") / res.run_id
    formats = {"csv": frozenset({"csv"}), "parquet": frozenset({"parquet"}), "both": frozenset({"csv", "parquet"})}
    write_run_artifacts(res, out, formats=formats[args.format])
    elapsed = time.perf_counter() - started
    n_warn = sum(1 for w in res.warnings if w.get("severity") != "info")
    print(
        f"run {res.run_id}: {res.grid.bins} bins × {len(res.series)} series, {n_warn} warnings, {elapsed:.2f} s → {out}"
    )
    for w in res.warnings:
        if w.get("severity") != "info":
            print(f"  warning {w['code']}: {w.get('message', '')}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """`flowtime validate`: build and compile a model, print its warnings and a one-line summary."""
    from engine_live.model.build import build_model
    from engine_live.model.document import load_model
    from engine_live.plan.compiler import compile_model

    text, base, warnings = _read_model(args.model, args.param)
    graph = build_model(load_model(text, base_dir=base))
    compile_model(graph)
    for w in [*warnings, *graph.info]:
        print(f"{w.get('severity', 'info')} {w['code']}: {w['message']}")
    print(f"valid: {len(graph.defs)} series definitions, {len(graph.topo)} topology nodes, {graph.grid.bins} bins")
    return EXIT_OK


SERVE_FLAGS = (
    "host",
    "port",
    "data_dir",
    "config",
    "tokens_file",
    "kafka_bootstrap",
    "kafka_telemetry_topic",
    "kafka_events_topic",
    "kafka_group",
    "log_level",
)


def _serve_flags(args: argparse.Namespace) -> dict[str, object]:
    return {k: getattr(args, k, None) for k in SERVE_FLAGS}


def cmd_serve(args: argparse.Namespace) -> int:
    """`flowtime serve`: run the service, or print the merged settings with `--print-config`."""
    import orjson

    from compat_api.server import run_server
    from compat_api.settings import load_settings

    settings = load_settings(_serve_flags(args))
    if args.print_config:
        print(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
        return EXIT_OK
    return run_server(settings)


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    from compat_api.cli.help import add_serve_flags

    add_serve_flags(p)


class _Version(argparse.Action):
    """`--version`: the installed version, looked up only when asked (`compat_api.cli.help.version`)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from compat_api.cli.help import version

        print(f"flowtime {version()}")
        parser.exit()


def given_command(argv: Sequence[str]) -> str:
    """The subcommand in `argv` (its first word that is not an option; "" when there is none)."""
    return next((arg for arg in argv if not arg.startswith("-")), "")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of the `flowtime` command. With `command`, only that subcommand is built in
    full (its module imported) and the others are listed by name and help; None: every one in full."""
    p = argparse.ArgumentParser(prog="flowtime", description="FlowTime Live: the live engine of FlowTime")
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="evaluate a model offline and write its artifacts")
    r.add_argument("model")
    r.add_argument("--out", help="run folder (default ./runs/<runId>)")
    r.add_argument("--format", choices=["csv", "parquet", "both"], default="both")
    r.add_argument("--deterministic-run-id", action="store_true")
    r.add_argument("--adjustments", help="model adjustments to apply (a live run's model/adjustments.json)")
    r.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=PARAM_HELP)
    r.set_defaults(func=cmd_run)
    v = sub.add_parser("validate", help="validate a model (or a template) and print errors and warnings")
    v.add_argument("model")
    v.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=PARAM_HELP)
    v.set_defaults(func=cmd_validate)
    sv = sub.add_parser("serve", help="start the service")
    if command in (None, "serve"):  # its flags show Settings' defaults: pydantic and numpy
        _add_serve_flags(sv)
        sv.add_argument("--print-config", action="store_true", help="print the merged settings and exit")
    sv.set_defaults(func=cmd_serve)
    for module, commands in LAZY_COMMANDS.items():
        if command is None or any(name == command for name, _ in commands):
            importlib.import_module(module).register(sub)
        else:
            for name, text in commands:
                sub.add_parser(name, help=text)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `flowtime` command line and return its exit code (errors are printed, not raised)."""
    args = build_parser(given_command(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (OutputClosedError, BrokenPipeError):  # `| head` has what it wanted: stop quietly
        detach_stdout()
        return EXIT_OK
    except ModelError as exc:
        if len(exc.errors) > 1:  # every error on its own line, the first one included
            print(f"error: {len(exc.errors)} errors:", file=sys.stderr)
            for e in exc.errors:
                print(f"  - {e}", file=sys.stderr)
        else:
            print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FlowTimeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_INPUT if exc.http_status < 500 else EXIT_ENGINE
    except KeyboardInterrupt:
        return EXIT_ENGINE
    except Exception as exc:  # the CLI promises exit 3 and no traceback
        print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ENGINE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

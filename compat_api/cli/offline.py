"""Commands of the `flowtime` CLI that read the data folder directly (SPEC §5, §8, §9).

- `compare A B`: run ids under `--data-dir` (default: the service's data folder), or run folders;
  prints a table and writes the same `diff.json` body as `POST /v1/compare` (to
  `<dataDir>/compares/<compareId>/diff.json`, or `--out`).
- `artifacts list [--type] [--search] [--template-id]`: the registry of `GET /v1/artifacts`.
- `telemetry capture --run-dir D --output O [--gaps] [--dry-run]`: calls
  `snapshot_writer.capture.capture_run` when that module is present, else exits 3 saying so.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from compat_api.cli.client import console
from engine_live.errors import BadInputError, CompareMismatchError, NotFoundError, ServerError

DATA_DIR_HELP = "data folder (default: FLOWTIME_DATA_DIR or ./data, as `flowtime serve` and `flowtime demo`)"


def _data_dir(value: str | None) -> Path:
    from compat_api.settings import load_settings

    return load_settings({"data_dir": value}).data_dir


def _load_run(ref: str, data_dir: Path) -> Any:
    from compat_api.run_store import RunStore, load_run_dir

    path = Path(ref)
    if path.is_dir() and (path / "run.json").is_file():
        return load_run_dir(path, data_dir / "inputs")
    try:
        return RunStore(data_dir / "runs", data_dir / "inputs").load(ref)
    except NotFoundError:
        raise NotFoundError(
            f"run {ref!r} not found in {data_dir / 'runs'} (the data folder of `flowtime serve` and `flowtime demo`"
            " unless they were given another: pass the same --data-dir, or a run folder)",
            runId=ref,
        ) from None


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_compare(args: argparse.Namespace) -> int:
    """`flowtime compare A B`: diff two runs of a data folder, print a table and write diff.json."""
    from rich.table import Table

    from compat_api.compare import compare_runs
    from compat_api.routes.compare import compare_id
    from snapshot_writer.atomic_files import json_bytes, write_bytes_atomic

    data_dir = _data_dir(args.data_dir)
    base, other = _load_run(args.a, data_dir), _load_run(args.b, data_dir)
    try:
        diff = compare_runs(base.compared(), other.compared())
    except CompareMismatchError as exc:
        raise BadInputError(str(exc), code="grid_mismatch") from None
    cid = compare_id(base.run_id, other.run_id)
    out = Path(args.out) if args.out else data_dir / "compares" / cid / "diff.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {"compareId": cid, **diff, "path": f"compares/{cid}/diff.json" if not args.out else str(out)}
    write_bytes_atomic(out, json_bytes(body), fsync=True)
    table = Table(title=f"{base.run_id} → {other.run_id} ({diff['bins']} bins)")
    for col in ("series", "bins", "MAE", "SMAPE", "Pearson", "% total"):
        table.add_column(col, justify="left" if col == "series" else "right")
    for s in diff["series"]:
        table.add_row(s["id"], str(s["bins"]), *(_fmt(s[k]) for k in ("mae", "smape", "pearson", "percentDelta")))
    out_console = console()
    out_console.print(table)
    for key, label in (("onlyInBase", "only in A"), ("onlyInCompare", "only in B")):
        if diff[key]:
            out_console.print(f"{label}: {', '.join(diff[key])}", highlight=False)
    out_console.print(f"diff written to {out}", highlight=False)
    return 0


def cmd_artifacts_list(args: argparse.Namespace) -> int:
    """`flowtime artifacts list`: the registry of a data folder as a table."""
    from rich.table import Table

    from compat_api.context import AppContext
    from compat_api.routes.artifacts import list_artifacts
    from compat_api.settings import load_settings

    ctx = AppContext(load_settings({"data_dir": args.data_dir}))
    items = list_artifacts(ctx, args.type, args.search, args.template_id, None)
    if args.json:
        for item in items:
            print(orjson.dumps(item).decode(), flush=True)
        return 0
    table = Table(title=f"artifacts in {ctx.data_dir} ({len(items)})")
    for col in ("id", "type", "created (UTC)", "template", "title"):
        table.add_column(col)
    for i in items:
        table.add_row(
            str(i["id"]),
            str(i.get("type")),
            str(i.get("createdUtc") or "—"),
            str(i.get("templateId") or "—"),
            str(i.get("title") or ""),
        )
    console().print(table)
    if not items:
        print(
            f"nothing in {ctx.data_dir}: runs of `flowtime serve`, `flowtime demo` and `flowtime run --out`"
            " land where they were told (--data-dir / FLOWTIME_DATA_DIR)"
        )
    return 0


def cmd_telemetry_capture(args: argparse.Namespace) -> int:
    """`flowtime telemetry capture`: write a run's series as a telemetry bundle."""
    try:
        from snapshot_writer.capture import capture_run  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ServerError(
            "telemetry capture is not available in this build (snapshot_writer.capture is missing)", code="unavailable"
        ) from None
    gaps = Path(args.gaps) if args.gaps else None
    result = capture_run(Path(args.run_dir), Path(args.output), gaps=gaps, dry_run=args.dry_run)
    if isinstance(result, dict | list):
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"{'would capture' if args.dry_run else 'captured'} {args.run_dir} → {args.output}")
    return 0


def register(sub: Any) -> None:
    """Add `compare`, `artifacts list` and `telemetry capture` to the `flowtime` parser."""
    c = sub.add_parser("compare", help="compare two finished runs (ids or run folders) and write diff.json")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--data-dir", dest="data_dir", help=DATA_DIR_HELP)
    c.add_argument("--out", help="diff.json path (default <dataDir>/compares/<compareId>/diff.json)")
    c.set_defaults(func=cmd_compare)
    a = sub.add_parser("artifacts", help="the artifact registry").add_subparsers(dest="action", required=True)
    al = a.add_parser("list", help="list runs, bundles and models in the data folder")
    al.add_argument("--type", choices=["run", "bundle", "model"])
    al.add_argument("--search")
    al.add_argument("--template-id", dest="template_id")
    al.add_argument("--data-dir", dest="data_dir", help=DATA_DIR_HELP)
    al.add_argument("--json", action="store_true", help="one JSON object per line")
    al.set_defaults(func=cmd_artifacts_list)
    t = sub.add_parser("telemetry", help="telemetry bundles").add_subparsers(dest="action", required=True)
    tc = t.add_parser("capture", help="turn a finished run into a telemetry bundle")
    tc.add_argument("--run-dir", dest="run_dir", required=True)
    tc.add_argument("--output", required=True)
    tc.add_argument("--gaps", help="gaps.yaml: bins to zero-fill or NaN")
    tc.add_argument("--dry-run", dest="dry_run", action="store_true")
    tc.set_defaults(func=cmd_telemetry_capture)


__all__ = ["cmd_artifacts_list", "cmd_compare", "cmd_telemetry_capture", "register"]

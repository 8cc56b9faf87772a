"""`python -m runner VERB ...`: the host-side JSON CLI that ops calls (one question a call).

Every verb prints one JSON document on stdout. Errors print {"error": {...}} and exit with
2 (usage), 3 (not found), 4 (conflict) or 1 (failed). `exec` is the wrapper itself.

The question verbs (QUESTION_VERBS: they read and answer at once) can also be asked in the
calling process through `answer`, which gives the same document and exit code; ops does that
on its own machine instead of starting a Python for each question.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from runner import __version__, contract, housekeeping, preflight, report_data, status, verbs
from runner.serve import QUESTION_VERBS  # what `answer` serves in the caller's process

EXIT_BY_KIND = {"usage": 2, "not_found": 3, "conflict": 4, "failed": 1}


class _JsonUsageParser(argparse.ArgumentParser):
    """argparse that raises a usage VerbError instead of printing its text and exiting, so a
    bad command line gets the same JSON error document as any other error (subparsers are
    made of the same class)."""

    def error(self, message: str) -> NoReturn:
        raise verbs.VerbError("usage", f"{self.prog}: {message}")


@functools.cache  # parse_args leaves it as it was; the resident runner builds it once
def _parser() -> argparse.ArgumentParser:
    parser = _JsonUsageParser(prog="python -m runner", description=__doc__)
    parser.add_argument("--serve", metavar="SOCKET",
                        help="after answering, start a resident runner on SOCKET unless one "
                             "listens there (runner.serve)")
    parser.add_argument("--serve-idle", type=float, default=300.0, metavar="SECONDS",
                        help="how long that resident runner waits for a request before it exits")
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("version", help="print the runner version")
    p = sub.add_parser("submit", help="create a run dir from stdin {spec, secrets} and launch it")
    p.add_argument("root", type=Path)
    p = sub.add_parser("submit-sweep", help="create a sweep's run dirs from stdin and launch it")
    p.add_argument("root", type=Path)
    p = sub.add_parser("sweep", help="the sweep driver: run each member in order (inside tmux)")
    p.add_argument("root", type=Path)
    p.add_argument("sweep_id")
    p = sub.add_parser("show", help="one contract JSON file of a run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("name", choices=sorted(contract.JSON_FILES))
    p = sub.add_parser("ls", help="files of a run dir (path, size, mtime) and its status")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--with-checkpoints", action="store_true")
    p = sub.add_parser("pack", help="tar stream on stdout of the files named on stdin (JSON)")
    p.add_argument("run_dir", type=Path)
    p = sub.add_parser("exec", help="run the wrapper for RUN_DIR (inside tmux)")
    p.add_argument("run_dir", type=Path)
    p = sub.add_parser("status", help="status of every run under ROOT, or of one")
    p.add_argument("--json", action="store_true", help="accepted for symmetry; output is JSON")
    p.add_argument("root", type=Path)
    p.add_argument("run_id", nargs="?")
    p = sub.add_parser("tail", help="bytes of stdout.log from an offset")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--offset", type=int)
    p.add_argument("--lines", type=int)
    p.add_argument("--max-bytes", type=int, default=1 << 20)
    p = sub.add_parser("cancel", help="stop a run and wait for its summary")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--wait", type=float, default=60.0)
    p = sub.add_parser("serve", help="answer runner verbs on a Unix socket (runner.serve)")
    p.add_argument("socket")
    p.add_argument("--idle", type=float, default=300.0, help="exit after this many idle seconds")
    report_data.add_verb(sub)
    preflight.add_verb(sub)
    housekeeping.add_verb(sub)
    return parser


def _run_dir_of(root: Path, run_id: str) -> Path:
    try:
        contract.validate_run_id(run_id)
    except contract.ContractError as exc:
        raise verbs.VerbError("usage", str(exc)) from exc
    run_dir = root / run_id
    if not run_dir.is_dir():
        raise verbs.VerbError("not_found", f"no run {run_id!r} under {root}")
    return run_dir


def _stdin_json(verb: str) -> Any:
    try:
        return json.load(sys.stdin)
    except ValueError as exc:
        raise verbs.VerbError("usage", f"{verb}: stdin is not JSON: {exc}") from exc


def _existing_run(run_dir: Path) -> Path:
    if not (run_dir / contract.SPEC).exists():
        raise verbs.VerbError("not_found", f"no run at {run_dir}")
    return run_dir


def _status(args: argparse.Namespace) -> dict[str, Any]:
    if args.run_id:
        return {"runs": [status.safe_status(_run_dir_of(args.root, args.run_id), tidy=True)]}
    return {"root": str(args.root), "runs": status.list_runs(args.root, tidy=True)}


def _show(args: argparse.Namespace) -> dict[str, Any]:
    path = args.run_dir / args.name
    if not path.exists():
        raise verbs.VerbError("not_found", f"no {args.name} in {args.run_dir}")
    try:
        return {"name": args.name, "doc": contract.read_json(path)}
    except contract.ContractError as exc:
        raise verbs.VerbError("failed", str(exc)) from exc


def _ls(args: argparse.Namespace) -> dict[str, Any]:
    from runner.pack import listing

    return listing(_existing_run(args.run_dir), args.with_checkpoints)


HANDLERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "version": lambda _a: {"runner_version": __version__, "python": sys.executable},
    "submit": lambda a: verbs.submit(a.root, _stdin_json("submit")),
    "submit-sweep": lambda a: verbs.submit_sweep(a.root, _stdin_json("submit-sweep")),
    "status": _status,
    "show": _show,
    "ls": _ls,
    "tail": lambda a: verbs.tail(a.run_dir, a.offset, a.max_bytes, a.lines),
    "cancel": lambda a: verbs.cancel(_existing_run(a.run_dir), a.wait),
    "report-data": report_data.answer,
    "preflight": preflight.answer,
    "housekeeping": housekeeping.answer,
}


def _long_running(args: argparse.Namespace) -> int | None:
    """Verbs that are processes rather than questions: the wrapper, the sweep driver, pack
    and the resident runner."""
    if args.verb == "exec":
        from runner.wrapper import exec_run

        return exec_run(args.run_dir)
    if args.verb == "sweep":
        from runner.sweep import Driver

        return Driver(args.root, args.sweep_id).run()
    if args.verb == "pack":
        from runner.pack import pack_to_stdout

        pack_to_stdout(args.run_dir, [str(p) for p in json.load(sys.stdin)])
        return 0
    if args.verb == "serve":
        from runner.serve import ServeError, serve

        try:
            return serve(args.socket, args.idle)
        except (ServeError, OSError) as exc:  # another daemon holds it, or an unsafe dir
            return _error(verbs.VerbError("conflict", str(exc)), sys.stdout)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    if not contract.from_expected_build():
        sys.stderr.write(f"No module named runner in {os.environ.get('OPS_RUNNER_DIR')} "
                         f"(this one is {Path(__file__).resolve().parent})\n")
        return 127
    try:
        args = _parser().parse_args(argv)
    except verbs.VerbError as exc:
        return _error(exc, sys.stdout)
    code = _long_running(args)
    if code is not None:
        return code
    code = _respond(args, sys.stdout)
    if args.serve:
        from runner.serve import start_detached

        start_detached(args.serve, args.serve_idle)
    return code


def answer(argv: Sequence[str]) -> tuple[int, str]:
    """(exit code, stdout) of `python -m runner ARGV` for a question verb, computed here: the
    same parser, handler and error document. Any other verb is refused (ValueError)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):  # where argparse prints --help before exiting
            args = _parser().parse_args(list(argv))
    except verbs.VerbError as exc:
        return _error(exc, out), out.getvalue()
    except SystemExit as exc:  # --help: what the process would print, and its exit status
        return (exc.code if isinstance(exc.code, int) else int(exc.code is not None)), \
            out.getvalue()
    if args.verb not in QUESTION_VERBS:
        raise ValueError(f"runner {args.verb} is not a question verb")
    return _respond(args, out), out.getvalue()


def _respond(args: argparse.Namespace, out: TextIO) -> int:
    try:
        result = HANDLERS[args.verb](args)
    except verbs.VerbError as exc:
        return _error(exc, out)
    # json.dumps, not json.dump: only the one-shot form uses the C encoder (status of 1,000
    # runs: json.dump's pure-Python chunks made one write per token, a tenth of the verb's CPU)
    out.write(json.dumps({"schema": f"ops.runner_{args.verb.replace('-', '_')}/1", **result})
              + "\n")
    return 0


def _error(exc: verbs.VerbError, out: TextIO) -> int:
    out.write(json.dumps({"error": {"kind": exc.kind, "message": exc.message}}) + "\n")
    return EXIT_BY_KIND.get(exc.kind, 1)

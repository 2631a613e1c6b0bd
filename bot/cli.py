"""`lora-bot` commands. Each command parses its arguments here and hands off to the module that does the work.

Exit codes: 0 nothing wrong, 1 an error-severity finding (or a failed run), 2 a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bot import __version__
from bot.report.text import json_text, terminal_line

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in how the command was called: printed as one line, exit status 2."""


class Terminated(BaseException):
    """SIGTERM arrived: raised where the program was, so the same cleanup as Ctrl-C runs (the output's
    `.partial` file is removed); a BaseException so no `except Exception` swallows it."""


@contextlib.contextmanager
def _terminate_cleanly():
    """While writing files: SIGTERM (a `kill`, a container stopping) unwinds like Ctrl-C, where its default
    action would end the process on the spot and leave a partial file behind."""

    def stop(signum, frame):
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (an embedder's worker): the caller's own handling applies
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_inspect(args: argparse.Namespace) -> int:
    from bot.core.inspect import inspect_evidence
    from bot.core.selection import is_repo_id
    from bot.report.inspect import render_inspections_json, render_inspections_text
    from bot.sources import local

    target = Path(args.target)
    if target.exists() and not (target.is_file() or target.is_dir()):
        raise UsageError(f"{args.target} is not a regular file or folder (a FIFO or a device is never read)")
    if target.exists():
        inspections = [inspect_evidence(e) for e in local.collect(target)]
    elif is_repo_id(args.target):
        inspections = _inspect_hub_repo(args.target, args.revision, args.endpoint, args.token)
    else:
        raise UsageError(f"no such file or folder: {args.target}")
    if args.json:
        print(render_inspections_json(inspections, with_modules=args.modules))
    else:
        print(render_inspections_text(inspections))
    return EXIT_FINDINGS if any(i.has_error for i in inspections) else EXIT_OK


def _inspect_hub_repo(repo_id: str, revision: str | None, endpoint: str | None, token: str | None) -> list:
    """`lora-bot inspect OWNER/NAME`: the scan's source and engine on one repo; a failed read is a usage error."""
    from bot.core.repo import RepoRef, inspect_repo
    from bot.hub.client import TokenError, make_api
    from bot.sources.hub import RemoteReader

    try:
        api = make_api(endpoint or os.environ.get("HF_ENDPOINT"), token or os.environ.get("HF_TOKEN"))
    except TokenError as error:
        raise UsageError(str(error)) from None
    result = inspect_repo(RemoteReader(api).read(RepoRef(repo_id, sha=revision)))
    if result.error and not result.files:
        raise UsageError(f"{repo_id}: {result.error}")
    return list(result.files)


def cmd_check(args: argparse.Namespace) -> int:
    from bot.checking import CheckInputError, check
    from bot.report.check import render_check_json, render_check_text
    from bot.vocab import Verdict

    try:
        result = check(
            args.adapter,
            args.base,
            file=args.file,
            revision=args.revision,
            base_revision=args.base_revision,
            endpoint=args.endpoint,
            token=args.token,
            cache_dir=args.cache_dir,
        )
    except CheckInputError as error:
        raise UsageError(str(error)) from None
    print(render_check_json(result) if args.json else render_check_text(result, all_modules=args.modules))
    return EXIT_OK if result.verdict == Verdict.LOADS else EXIT_FINDINGS


def cmd_explain(args: argparse.Namespace) -> int:
    from bot.core.flags import CODES, explain, flag_table_markdown

    if args.markdown:
        print(flag_table_markdown())
        return EXIT_OK
    if args.code is None:
        width = max(len(c) for c in CODES)
        for entry in CODES.values():
            print(f"{entry.code:<{width}}  {entry.severity:<7}  {entry.summary}")
        return EXIT_OK
    text = explain(args.code)
    if text is None:
        raise UsageError(f"unknown flag code {args.code!r}; `lora-bot explain` lists them all")
    print(text)
    return EXIT_OK


def cmd_census_export(args: argparse.Namespace) -> int:
    from bot.census.export import export_census, parquet_available, publish_census
    from bot.census.store import CensusStore, StoreError
    from bot.config import ConfigError, load_config
    from bot.hub.client import describe_error, make_api

    try:
        config = load_config(args.config)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if args.parquet and not parquet_available():
        raise UsageError("--parquet needs pyarrow: pip install 'lora-bot[parquet]'")
    if args.publish and args.publish.count("/") != 1:
        raise UsageError(f"--publish {args.publish}: expected OWNER/NAME")
    store_path = Path(args.store or config.census.store)
    if not store_path.is_file():
        raise UsageError(f"no census store at {store_path}: run `lora-bot scan` first, or pass --store")
    try:
        with CensusStore(store_path) as store:
            result = export_census(store, Path(args.jsonl), Path(args.parquet) if args.parquet else None)
    except StoreError as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"cannot write the export: {error}") from None
    written = f"{result.jsonl}" + (f" and {result.parquet}" if result.parquet else "")
    print(f"{result.rows} LoRA files in {result.repos} repos written to {written}")
    if args.publish:
        endpoint = args.endpoint or config.hub.endpoint or os.environ.get("HF_ENDPOINT")
        token = args.token or os.environ.get(config.hub.token_env) or None
        api = make_api(endpoint, token, timeout=config.hub.timeout)
        try:
            url = publish_census(api, args.publish, result, args.license)
        except Exception as error:  # noqa: BLE001 — the files are written; say why the upload failed
            print(
                f"lora-bot: error: publishing to {args.publish} failed: {describe_error(error)}",
                file=sys.stderr,
            )
            return 1
        print(f"published to the dataset {args.publish}: {url}")
    return EXIT_OK


def cmd_scan(args: argparse.Namespace) -> int:
    from bot.census.store import StoreError
    from bot.config import ConfigError, load_config
    from bot.hub.client import TokenError, describe_error
    from bot.pipeline import ScanOptions, run_scan
    from bot.report.scan import iter_scan_report_json, iter_scan_text, scan_report_markdown
    from bot.sources.discovery import Shard

    try:
        config = load_config(args.config)
        shard = Shard.parse(args.shard) if args.shard else None
    except (ConfigError, ValueError) as error:
        raise UsageError(str(error)) from None
    if args.max_prs is not None and args.max_prs < 0:
        raise UsageError("--max-prs must be 0 or more")
    from bot.core.selection import is_repo_id

    for repo_id in args.repo or ():
        if not is_repo_id(repo_id, namespace=False):
            raise UsageError(f"--repo {repo_id!r} is not a repo id (owner/name)")
    options = ScanOptions(
        endpoint=args.endpoint,
        token=args.token,
        dry_run=args.dry_run,
        repos=tuple(args.repo or ()),
        shard=shard,
        max_prs=args.max_prs,
        progress=sys.stderr.isatty() and not args.json,
        store=args.store,
        build_previews=args.build_previews,
    )
    try:
        result = run_scan(config, options)
    except (StoreError, TokenError) as error:
        raise UsageError(str(error)) from None
    except Exception as error:  # noqa: BLE001 — discovery itself failed: nothing to report but the reason
        print(f"lora-bot: error: the scan could not list repos: {describe_error(error)}", file=sys.stderr)
        return EXIT_FINDINGS
    # The report is streamed from the census store, repo by repo: memory stays flat in the number of repos.
    if args.report_json:
        _write_pieces(args.report_json, iter_scan_report_json(result))
    if args.report_md:
        _write(args.report_md, scan_report_markdown(result))
    if args.json:
        for piece in iter_scan_report_json(result):
            sys.stdout.write(piece)
        print()
    else:
        for line in iter_scan_text(result):
            print(line)
    # Findings are the scan's product, not a failure; only a run where no repo could be read fails.
    all_failed = result.repos and all(r.error and not r.files for r in result.repos)
    return EXIT_FINDINGS if all_failed else EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole bot offline: the sandbox Hub with its sample repos, and a dry-run scan against it."""
    import dataclasses
    import tempfile

    from bot.config import ConfigError, Query, load_config
    from bot.pipeline import ScanOptions, run_scan
    from bot.report.scan import render_scan_text, scan_report, scan_report_markdown
    from bot.sandbox import SandboxHub
    from bot.sandbox.samples import write_sample_repos

    try:
        config = load_config(args.config)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    if args.samples_dir is not None and any(Path(args.samples_dir).glob("*/*")):
        raise UsageError(f"--samples-dir {args.samples_dir} already holds repos; name a new or empty folder")
    with tempfile.TemporaryDirectory(prefix="lora-bot-demo-") as scratch:
        # With --samples-dir the sample repos stay on disk afterwards, to try `inspect` and `resize` on.
        root = Path(args.samples_dir) if args.samples_dir is not None else Path(scratch) / "repos"
        repo_ids = write_sample_repos(root)
        with SandboxHub(user="lora-bot") as hub:
            hub.load_directory(root)
            print(f"sandbox Hub at {hub.endpoint} serving {len(repo_ids)} sample repos", file=sys.stderr)
            # The samples are everything the demo owner has; a watermark would hide them on a second run.
            discovery = dataclasses.replace(
                config.discovery,
                queries=(Query(filter=(), author="demo"),),
                incremental=False,
                state_file=str(Path(scratch) / "state.json"),
            )
            # The demo's repos were uploaded a moment ago and its owner "demo" has them all: the cooldown,
            # the per-owner cap and the operator's variant list would hide what the bot does, so the demo
            # shows them lifted (variants as if "demo" were listed).
            proposals = dataclasses.replace(
                config.proposals, cooldown_hours=0, max_prs_per_owner=100, variant_repos=("demo",)
            )
            config = dataclasses.replace(config, discovery=discovery, proposals=proposals)
            # The demo leaves nothing behind: its census store lives in the scratch folder too.
            options = ScanOptions(
                endpoint=hub.endpoint,
                token="hf_sandbox_demo",
                dry_run=True,
                progress=sys.stderr.isatty(),
                store=str(Path(scratch) / "census.sqlite"),
            )
            result = run_scan(config, options)
            writes = hub.write_request_count()
    if args.report_md:
        _write(args.report_md, scan_report_markdown(result))
    print(json_text(scan_report(result)) if args.json else render_scan_text(result))
    print(f"dry run: {writes} write requests reached the sandbox Hub", file=sys.stderr)
    return EXIT_OK


def cmd_action(args: argparse.Namespace) -> int:
    from bot.action.entry import main as action_main

    return action_main(os.environ)


def cmd_merge_reports(args: argparse.Namespace) -> int:
    from bot.action.runner import append_summary
    from bot.report.scan import check_report, merge_reports, merged_report_markdown

    try:
        reports = [check_report(_read_json(path), path) for path in args.reports]
        merged = merge_reports(reports)
    except ValueError as error:
        raise UsageError(str(error)) from None
    markdown = merged_report_markdown(merged, expected_shards=args.expect)
    if args.summary:
        append_summary(args.summary, markdown)
    else:
        print(markdown, end="")
    if args.output:
        _write(args.output, json_text(merged) + "\n")
    return EXIT_FINDINGS if args.expect is not None and len(reports) < args.expect else EXIT_OK


def _read_json(path: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise UsageError(f"{path}: not JSON ({error})") from None


def _write(path: str, text: str) -> None:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None


def _write_pieces(path: str, pieces) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as out:
        for piece in pieces:
            out.write(piece)
        out.write("\n")


def cmd_resize(args: argparse.Namespace) -> int:
    from bot.report.resize import render_resize_json, render_resize_text
    from bot.resize.engine import OutputPathError, resize_adapter
    from bot.resize.math import ResizeError, ResizeOptions

    target = Path(args.target)
    if not target.exists():
        raise UsageError(f"no such file or folder: {args.target}")
    try:
        options = ResizeOptions(rank=args.rank, energy=args.energy, per_module=args.per_module)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        with _terminate_cleanly():
            report = resize_adapter(
                target, options, Path(args.output) if args.output else None, overwrite=args.force
            )
    except Terminated:
        print("lora-bot: terminated; the partial output was removed", file=sys.stderr)
        return 128 + signal.SIGTERM
    except OutputPathError as error:
        raise UsageError(str(error)) from None
    except (ResizeError, OSError) as error:
        reason = (
            f"{error.strerror}: {error.filename}" if isinstance(error, OSError) and error.strerror else error
        )
        print(terminal_line(f"lora-bot: cannot resize {args.target}: {reason}"), file=sys.stderr)
        return EXIT_FINDINGS
    print(render_resize_json(report) if args.json else render_resize_text(report))
    return EXIT_OK


def _add_command_module(commands, name: str, summary: str, module) -> None:
    """A command that lives in a room of its own: the module gives DESCRIPTION, add_arguments and run."""
    parser = commands.add_parser(name, help=summary, description=module.DESCRIPTION)
    module.add_arguments(parser)
    parser.set_defaults(handler=module.run)


def _add_repo_id_options(parser: argparse.ArgumentParser) -> None:
    """For commands whose target may be a Hub repo id instead of a path."""
    parser.add_argument("--endpoint", help="Hub endpoint for a repo id (default: HF_ENDPOINT, else the Hub)")
    parser.add_argument("--token", help="Hub token for a repo id (default: HF_TOKEN)")
    parser.add_argument("--revision", help="branch, tag or commit for a repo id (the adapter's, for check)")


def _add_config_and_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: the bundled config.yaml)")
    parser.add_argument("--json", action="store_true", help="print the report JSON on stdout")
    parser.add_argument("--report-md", metavar="FILE", help="write the markdown report to FILE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora-bot", description="Find and fix broken LoRA adapters.")
    parser.add_argument("--version", action="version", version=f"lora-bot {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log the bot's decisions on stderr (-vv: more)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    inspect = commands.add_parser(
        "inspect",
        help="format, rank, alpha, base model and flags of LoRA files",
        description="Inspect a LoRA file, every LoRA file in a folder, or a Hub repo "
        "(OWNER/NAME). Reads headers only.",
    )
    inspect.add_argument("target", help="a file, a folder, or a Hub repo id")
    inspect.add_argument("--json", action="store_true", help="one JSON object on stdout")
    inspect.add_argument("--modules", action="store_true", help="with --json: per-module details")
    _add_repo_id_options(inspect)
    inspect.set_defaults(handler=cmd_inspect)

    check = commands.add_parser(
        "check",
        help="will this adapter load on this base, and apply fully? (headers only)",
        description="Map every module of a LoRA adapter onto the base model's weights and say whether "
        "PEFT / diffusers loading succeeds, ignores part of the adapter, or fails, and why. ADAPTER: a file, "
        "a folder or a Hub repo; BASE: a local file or folder (sharded, or a diffusers pipeline) or a Hub "
        "repo. Exit 0 loads, 1 partial, fails or unknown, 2 usage error.",
    )
    check.add_argument("adapter", metavar="ADAPTER", help="a LoRA file, a folder, or a Hub repo id")
    check.add_argument(
        "--base", required=True, metavar="BASE", help="the base model: a local path or a Hub repo id"
    )
    check.add_argument("--json", action="store_true", help="one JSON object on stdout")
    check.add_argument(
        "--modules", action="store_true", help="list every module, not only those that do not apply"
    )
    check.add_argument("--file", help="the LoRA file to check when ADAPTER holds several")
    _add_repo_id_options(check)
    check.add_argument("--base-revision", help="branch, tag or commit of the base repo")
    check.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="keep the base's parsed headers in DIR, by file sha (default: LORA_BOT_CACHE_DIR; else memory only)",
    )
    check.set_defaults(handler=cmd_check)

    scan = commands.add_parser(
        "scan",
        help="find and inspect LoRAs on a Hub (headers only)",
        description="Discover repos by the config's queries (or --repo), inspect every "
        "LoRA file from its header, and report.",
    )
    _add_config_and_report_options(scan)
    scan.add_argument("--endpoint", help="Hub endpoint (default: the config, then HF_ENDPOINT, then the Hub)")
    scan.add_argument("--token", help="Hub token (default: the variable named by hub.token_env, HF_TOKEN)")
    scan.add_argument("--repo", action="append", metavar="ID", help="scan only this repo (repeatable)")
    scan.add_argument("--dry-run", action="store_true", help="print what would be proposed; write nothing")
    scan.add_argument("--report-json", metavar="FILE", help="write the report JSON to FILE")
    scan.add_argument("--shard", metavar="K/N", help="scan only shard K of N (stable by repo id)")
    scan.add_argument(
        "--max-prs", type=int, metavar="N", help="at most N PRs this run (overrides the config)"
    )
    scan.add_argument("--store", metavar="PATH", help="the census store (overrides census.store)")
    scan.add_argument(
        "--build-previews",
        action="store_true",
        help="dry run: download weights to preview variant and metadata-fix PRs (within the budget)",
    )
    scan.set_defaults(handler=cmd_scan)

    census = commands.add_parser(
        "census",
        help="the census store: export it as JSONL/Parquet, publish it as a Hub dataset",
        description="Work with the census store that `lora-bot scan` fills.",
    )
    census_commands = census.add_subparsers(dest="census_command", metavar="COMMAND", required=True)
    export = census_commands.add_parser(
        "export",
        help="one row per LoRA file: JSONL, Parquet (with pyarrow), optionally published to a Hub dataset",
        description="Write the census store as one row per LoRA file (repo, sha, path, format, rank, "
        "ranks, alpha, family, base model, flags). --publish commits the files and a dataset card to a "
        "Hub dataset repo, creating it if needed.",
    )
    export.add_argument("--config", metavar="FILE", help="config file (census.store, hub.endpoint)")
    export.add_argument("--store", metavar="PATH", help="the census store (overrides census.store)")
    export.add_argument("--jsonl", required=True, metavar="FILE", help="write the rows as JSON lines to FILE")
    export.add_argument("--parquet", metavar="FILE", help="also write them as Parquet (needs pyarrow)")
    export.add_argument("--publish", metavar="OWNER/NAME", help="commit them to this Hub dataset repo")
    export.add_argument(
        "--endpoint", help="Hub endpoint (default: the config, then HF_ENDPOINT, then the Hub)"
    )
    export.add_argument("--token", help="Hub token (default: the variable named by hub.token_env, HF_TOKEN)")
    export.add_argument(
        "--license", default="cc-by-4.0", help="the dataset card's license (default: cc-by-4.0)"
    )
    export.set_defaults(handler=cmd_census_export)

    demo = commands.add_parser(
        "demo",
        help="run the bot offline on the sandbox Hub's sample repos (dry run)",
        description="Start the sandbox Hub with its built-in sample repos, run a dry-run "
        "scan against it, print the report and stop the sandbox.",
    )
    _add_config_and_report_options(demo)
    demo.add_argument(
        "--samples-dir",
        metavar="DIR",
        help="write the sample repos to DIR (OWNER/NAME folders) and keep them, to try inspect and resize on",
    )
    demo.set_defaults(handler=cmd_demo)

    action = commands.add_parser(
        "action",
        help="the GitHub Action's entry step (reads INPUT_* variables)",
        description="Run one scan as the GitHub Action's step: inputs from INPUT_* "
        "variables, the report to $GITHUB_STEP_SUMMARY and a JSON file, "
        "outputs to $GITHUB_OUTPUT, annotations on stdout. "
        "See action.yml.",
    )
    action.set_defaults(handler=cmd_action)

    merge = commands.add_parser(
        "merge-reports",
        help="merge the JSON reports of a sharded run into one",
        description="Merge shard reports (`lora-bot scan --report-json`, the Action's "
        "report-path) into one markdown summary and, with --output, one "
        "JSON.",
    )
    merge.add_argument("reports", nargs="*", metavar="FILE", help="report JSON files, one per shard")
    merge.add_argument(
        "--summary",
        metavar="FILE",
        help="append the markdown to FILE (e.g. $GITHUB_STEP_SUMMARY) instead of printing it",
    )
    merge.add_argument("--output", metavar="FILE", help="write the merged report JSON to FILE")
    merge.add_argument(
        "--expect", type=int, metavar="N", help="N shards ran: say so, and exit 1, if reports are missing"
    )
    merge.set_defaults(handler=cmd_merge_reports)

    from bot.sandbox import cli as sandbox_cli  # stdlib only: the sandbox's serving code, no torch
    from bot.serve import cli as serve_cli  # imports Starlette/uvicorn only when it runs

    _add_command_module(
        commands, "serve", "the webhook service: scan a repo when it is pushed or commented", serve_cli
    )
    _add_command_module(
        commands, "sandbox", "serve the local sandbox Hub (a test and demo server)", sandbox_cli
    )

    explain = commands.add_parser(
        "explain",
        help="what a flag code means",
        description="Explain a flag code; without a code, list them all.",
    )
    explain.add_argument("code", nargs="?")
    explain.add_argument("--markdown", action="store_true", help="the table of every code, as in the README")
    explain.set_defaults(handler=cmd_explain)

    resize = commands.add_parser(
        "resize",
        help="lower or raise the rank of a LoRA file, keeping its scale",
        description="Write a copy of a LoRA adapter at another rank: the best rank-K "
        "approximation (SVD of the factors) or zero padding, with alpha "
        "rescaled so the scale is unchanged. Streams one module at a time.",
    )
    resize.add_argument("target", metavar="IN", help="a .safetensors LoRA file or a PEFT adapter folder")
    goal = resize.add_mutually_exclusive_group(required=True)
    goal.add_argument("--rank", type=int, metavar="K", help="the new rank of every module")
    goal.add_argument(
        "--energy",
        type=float,
        metavar="F",
        help="the smallest rank keeping fraction F of the Frobenius energy (sum of squared "
        "singular values), one rank for the file unless --per-module",
    )
    resize.add_argument("--per-module", action="store_true", help="with --energy: pick a rank per module")
    resize.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output file (a folder for PEFT adapters); default <stem>-r<K> beside the input",
    )
    resize.add_argument("--json", action="store_true", help="one JSON object on stdout")
    resize.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    resize.set_defaults(handler=cmd_resize)

    return parser


def _configure_logging(verbosity: int) -> None:
    """Decisions (skipped repos, held-back PRs, what a dry run would do) are logged; -v shows them on stderr."""
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger("bot")
    logger.setLevel(level)
    handler = logging.StreamHandler(sys.stderr)  # this call's stderr (tests and embedders swap it)
    handler.setFormatter(logging.Formatter("lora-bot: %(levelname)s %(name)s: %(message)s"))
    logger.handlers = [handler]


# CPython's cycle collector runs after every 700 new containers and re-walks what survived. Reading a large
# header makes millions of them (a dict, a tuple and a record per tensor), none in a cycle, and they all
# live until the report is written: with the default the collector took a third of a 200,000-tensor
# inspection (benchmarks/hostile_bench.py). Collections stay on, just rarer.
GC_THRESHOLDS = (100_000, 50, 100)


def main(argv: Sequence[str] | None = None) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return args.handler(args)
    except UsageError as error:
        print(terminal_line(f"lora-bot: error: {error}"), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lora-bot: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`lora-bot inspect DIR | head`); point stdout at devnull so the exit is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (Exception, RecursionError) as error:  # noqa: BLE001 — the last guard: one line, never a traceback
        from bot.hub.client import describe_error

        print(terminal_line(f"lora-bot: internal error: {describe_error(error)}"), file=sys.stderr)
        return EXIT_FINDINGS

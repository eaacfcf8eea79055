"""`moenv` commands: thin wrappers that load, read, build, render and pick exit codes.

Exit codes: 0 success (or no changes), 1 error (usage errors included), 2 changes pending
(`plan --detailed-exitcode` only).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from pydantic import ValidationError

from moenv import __version__, api
from moenv.cli.output import (
    check_json,
    progress_reporter,
    render_check,
    render_events,
    render_show,
    render_status,
    show_json,
    status_json,
)
from moenv.errors import ConflictError, ManifestError, MoenvError, Problem
from moenv.manifest.loader import load_variables
from moenv.manifest.schema_export import write_schema
from moenv.models.config import Config
from moenv.models.manifest import EnvironmentSpec
from moenv.models.plan import Plan, PlanOptions, Selector
from moenv.planner.render import render_json, render_text

F = TypeVar("F", bound=Callable[..., Any])
EXIT_ERROR = 1
EXIT_PENDING = 2


class State:
    def __init__(self, config_path: Path | None, debug: bool, now: datetime | None = None) -> None:
        self.config_path = config_path
        self.debug = debug
        self.fixed_now = now
        self._config: Config | None = None

    @property
    def now(self) -> datetime:
        return self.fixed_now or datetime.now(UTC)

    def clock(self) -> datetime:
        return self.now

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = api.current_config(self.config_path)
        return self._config


def manifest_options(func: F) -> F:
    """PATHS (at least one) and the template variables."""
    return variable_options(click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))(func))


def variable_options(func: F) -> F:
    """--var NAME=VALUE and --var-file FILE: the template variables of the manifests loaded."""
    func = click.option(
        "--var", "var_pairs", multiple=True, metavar="NAME=VALUE", help="Template variable (vars.NAME)."
    )(func)
    return click.option(
        "--var-file",
        "var_files",
        multiple=True,
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        help="YAML file of template variables.",
    )(func)


def plan_options(func: F) -> F:
    func = click.option("--prune", is_flag=True, help="Delete environments that are in no loaded manifest.")(func)
    func = click.option("--force", is_flag=True, help="Allow rebuilding or deleting protected environments.")(func)
    func = click.option(
        "--adopt", is_flag=True, help="Take over existing target databases moenv does not own (replacing them)."
    )(func)
    func = click.option("--only", "only", multiple=True, metavar="ENV", help="Only these environments (repeatable).")(
        func
    )
    func = click.option(
        "-l",
        "--label",
        "labels",
        multiple=True,
        metavar="KEY=VALUE",
        help="Only environments with this label (KEY!=VALUE: without it); repeatable.",
    )(func)
    func = click.option(
        "--keep-going",
        "-k",
        is_flag=True,
        help="Plan (and apply) every environment that can be; report the others as errors and exit 1.",
    )(func)
    return click.option("--max-deletes", type=click.IntRange(min=0), help="Refuse plans deleting more than N.")(func)


def _options(
    prune: bool,
    force: bool,
    adopt: bool,
    max_deletes: int | None,
    only: tuple[str, ...],
    labels: tuple[str, ...],
    keep_going: bool = False,
) -> PlanOptions:
    pairs: list[tuple[str, str]] = []
    excluded: list[tuple[str, str]] = []
    for text in labels:
        key, sep, value = text.partition("=")
        negated = key.endswith("!")
        key = key.removesuffix("!")
        if not sep or not key:
            raise click.BadParameter(f"{text!r}: expected KEY=VALUE or KEY!=VALUE", param_hint="--label")
        (excluded if negated else pairs).append((key, value))
    selector = Selector(only=frozenset(only), labels=tuple(pairs), excluded=tuple(excluded))
    return PlanOptions(
        prune=prune, force=force, adopt=adopt, max_deletes=max_deletes, selector=selector, keep_going=keep_going
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="moenv")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Config file (default: ./moenv.yaml).")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.option("--now", "now", type=click.DateTime(), hidden=True, help="Pretend it is this time (UTC), for tests.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, debug: bool, now: datetime | None) -> None:
    """Database clone environments as code: plan and apply copies from YAML manifests."""
    ctx.obj = State(config_path, debug, now.replace(tzinfo=UTC) if now else None)


@cli.command()
@manifest_options
def validate(paths: tuple[Path, ...], var_pairs: tuple[str, ...], var_files: tuple[Path, ...]) -> None:
    """Check manifests (no server needed)."""
    manifests = api.load(paths, variables=load_variables(var_pairs, var_files))
    for manifest in manifests:
        click.echo(f"ok  {manifest.path}:{manifest.line}  {manifest.name}")
    click.echo(f"{len(manifests)} environment(s) valid.")


@cli.command()
@manifest_options
@click.option("--resolve/--no-resolve", default=True, help="Also resolve tables against the source catalog.")
@click.pass_obj
def render(
    state: State, paths: tuple[Path, ...], var_pairs: tuple[str, ...], var_files: tuple[Path, ...], resolve: bool
) -> None:
    """Print rendered manifests and the tables each environment resolves to."""
    manifests = api.load(paths, variables=load_variables(var_pairs, var_files))
    documents = [m.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True) for m in manifests]
    click.echo(yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True), nl=False)
    if not resolve:
        return
    desired = api.resolve(manifests, state.config)
    for name, want in desired.items():
        click.echo(f"# {name}: {want.source} → {want.target}")
        for table in want.tables:
            columns = ", ".join(
                f"{c} = {s}" if s != f"`{c}`" else c for c, s in zip(table.columns, table.select, strict=True)
            )
            where = f" WHERE {table.where}" if table.where else ""
            click.echo(f"#   {table.target} ({table.method}): {columns}{where}")
        for view in want.views:
            click.echo(f"#   {view.name} (view)")


@cli.command()
@click.option("-o", "--output", "directory", type=click.Path(path_type=Path), default=Path("schemas"))
def schema(directory: Path) -> None:
    """Write the JSON Schema of the manifest format."""
    click.echo(str(write_schema(directory)))


def _plan(state: State, paths: tuple[Path, ...], variables: dict[str, str], options: PlanOptions) -> Plan:
    return api.plan(paths, config=state.config, variables=variables, options=options, now=state.now)


@cli.command()
@manifest_options
@plan_options
@click.option("-o", "--out", "out", type=click.Path(path_type=Path), help="Save the plan as JSON for `apply`.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--steps", is_flag=True, help="Show every step of every action.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes pending, 1 on error.")
@click.pass_obj
def plan(
    state: State,
    paths: tuple[Path, ...],
    var_pairs: tuple[str, ...],
    var_files: tuple[Path, ...],
    prune: bool,
    force: bool,
    adopt: bool,
    max_deletes: int | None,
    only: tuple[str, ...],
    labels: tuple[str, ...],
    keep_going: bool,
    out: Path | None,
    as_json: bool,
    steps: bool,
    detailed_exitcode: bool,
) -> None:
    """Show what `moenv apply` would do."""
    options = _options(prune, force, adopt, max_deletes, only, labels, keep_going)
    result = _plan(state, paths, load_variables(var_pairs, var_files), options)
    click.echo(render_json(result) if as_json else render_text(result, steps=steps))
    if out is not None:
        out.write_text(render_json(result) + "\n", encoding="utf-8")
        click.echo(f"Saved the plan to {out}; apply it with `moenv apply {out}`.", err=True)
    _report_errors(result)
    if detailed_exitcode and result.has_changes:
        raise SystemExit(EXIT_PENDING)


def _report_errors(plan: Plan) -> None:
    """Environments --keep-going left out: one line each on stderr, then exit 1."""
    if not plan.errors:
        return
    for error in plan.errors:
        first = error.reasons[0]
        named = first if first.startswith(f"{error.environment}:") else f"{error.environment}: {first}"
        click.echo(f"error: {named}", err=True)
    click.echo(f"{len(plan.errors)} environment(s) could not be planned (--keep-going): see above.", err=True)
    raise SystemExit(EXIT_ERROR)


def _is_saved_plan(paths: Sequence[Path]) -> bool:
    return len(paths) == 1 and paths[0].suffix == ".json"


def _load_plan(path: Path) -> Plan:
    try:
        return Plan.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(Problem(f"cannot read the saved plan: {exc}", path)) from exc
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ManifestError(
            Problem(f"not a moenv plan: {first['msg']} at {'.'.join(map(str, first['loc']))}", path)
        ) from exc


def _confirm(plan: Plan, yes: bool) -> None:
    if not plan.destructive or yes:
        return
    if not sys.stdin.isatty():
        raise ConflictError(
            "this plan replaces or deletes data and no terminal is attached to confirm it",
            hint="review the plan, then pass --yes",
        )
    if not click.confirm("Apply this plan?", default=False):
        raise click.Abort


def _run(state: State, plan: Plan, *, yes: bool, check_revisions: bool, parallel: int = 1, jobs: int = 1) -> None:
    if not plan.has_changes:
        click.echo("Nothing to do.")
        _report_errors(plan)
        return
    _confirm(plan, yes)
    with progress_reporter(tagged=jobs > 1) as reporter:
        result = api.apply(
            plan,
            config=state.config,
            reporter=reporter,
            clock=state.clock,
            check_revisions=check_revisions,
            parallel=parallel,
            jobs=jobs,
        )
    done = sum(1 for r in result.results if r.ok)
    click.echo(f"Applied {done} of {len(result.results)} action(s).")
    if not result.ok:
        for failure in result.failed:
            click.echo(f"error: {failure.op} {failure.environment}: {failure.error}", err=True)
        if not plan.errors:
            raise SystemExit(EXIT_ERROR)
    _report_errors(plan)


@cli.command()
@manifest_options
@plan_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask before replacing or deleting data.")
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    help="Seconds to wait for an environment another run is applying (default: lock_timeout in moenv.yaml, 30).",
)
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Tables copied at once when the target is on another server than the source.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Environments applied at once, each under its own lock (a fleet's creates and refreshes).",
)
@click.pass_obj
def apply(
    state: State,
    paths: tuple[Path, ...],
    var_pairs: tuple[str, ...],
    var_files: tuple[Path, ...],
    prune: bool,
    force: bool,
    adopt: bool,
    max_deletes: int | None,
    only: tuple[str, ...],
    labels: tuple[str, ...],
    keep_going: bool,
    yes: bool,
    lock_timeout: float | None,
    parallel: int,
    jobs: int,
) -> None:
    """Make the servers match the manifests (or apply a saved plan.json exactly)."""
    if lock_timeout is not None:
        state._config = replace(state.config, lock_timeout=lock_timeout)
    if _is_saved_plan(paths):
        saved = _load_plan(paths[0])
        click.echo(render_text(saved))
        _run(state, saved, yes=yes, check_revisions=True, parallel=parallel, jobs=jobs)
        return
    options = _options(prune, force, adopt, max_deletes, only, labels, keep_going)
    result = _plan(state, paths, load_variables(var_pairs, var_files), options)
    click.echo(render_text(result))
    _run(state, result, yes=yes, check_revisions=False, parallel=parallel, jobs=jobs)


@cli.command()
@click.argument("database")
@click.option("--server", default="default", show_default=True, help="The source server (a name in moenv.yaml).")
@click.option("--name", "env_name", default="dev", show_default=True, help="The environment's name.")
@click.option("--target", help="The target database (default: <name>_db).")
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(path_type=Path),
    help="Where to write the manifest (default: environments/<name>.yaml).",
)
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
@click.pass_obj
def init(
    state: State, database: str, server: str, env_name: str, target: str | None, out: Path | None, force: bool
) -> None:
    """Write a first manifest copying DATABASE, with a mask for every column that looks personal.

    Reads the source catalog (no rows), picks a mask per column that fits its type and indexes
    (pseudonyms, NULL, a key-based value for unique columns, a date shift for birth dates), checks
    that the manifest resolves, and writes it for you to review before `moenv plan`.
    """
    path = out or Path("environments") / f"{env_name}.yaml"
    if path.exists() and not force:
        raise ConflictError(f"{path} exists; nothing written", hint="choose another --out, or --force to replace it")
    text, masked = api.scaffold_manifest(
        state.config, server, database, name=env_name, target=target or f"{env_name.replace('-', '_')}_db"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    click.echo(f"Wrote {path}: {database} copied whole, {masked} column(s) masked.")
    if masked:
        click.echo("The masks use moenv.* helpers: set MOENV_SALT (or salt: in moenv.yaml) before applying.")
    click.echo(f"Review it, then: moenv plan {path}")


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@variable_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def check(
    state: State, paths: tuple[Path, ...], var_pairs: tuple[str, ...], var_files: tuple[Path, ...], as_json: bool
) -> None:
    """Before the first apply: can moenv do what the manifests in PATHS need on each server?

    Connects to every server they use (every configured one without PATHS), reads each source
    database, creates and drops a probe database and takes a lock on each target server, reads
    the ledger, plans the manifests as `plan --keep-going` would, and reports what would fail or
    be slow, with what to do. Exit 1 on a failure.
    """
    roles, findings = api.check(state.config, paths, variables=load_variables(var_pairs, var_files))
    click.echo(json.dumps(check_json(roles, findings), indent=2) if as_json else render_check(roles, findings))
    if any(f.level == "failure" for f in findings):
        raise SystemExit(EXIT_ERROR)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(state: State, as_json: bool) -> None:
    """List the environments moenv manages, with their progress."""
    result = api.status(state.config)
    click.echo(json.dumps(status_json(result), indent=2) if as_json else render_status(result, state.now))
    if result.unreachable:  # what was printed is incomplete: a monitoring job must notice
        raise SystemExit(EXIT_ERROR)


@cli.command()
@click.argument("environment")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Delete even a protected environment.")
@click.pass_obj
def destroy(state: State, environment: str, yes: bool, force: bool) -> None:
    """Delete one environment and its target database."""
    plan_ = api.destroy_plan(state.config, environment, force=force, now=state.now)
    click.echo(render_text(plan_))
    _run(state, plan_, yes=yes, check_revisions=True)


@cli.command()
@manifest_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--keep-going", "-k", is_flag=True, help="Check every environment that can be; exit 1 if any cannot.")
@click.pass_obj
def drift(
    state: State,
    paths: tuple[Path, ...],
    var_pairs: tuple[str, ...],
    var_files: tuple[Path, ...],
    as_json: bool,
    keep_going: bool,
) -> None:
    """For scheduled jobs: exit 2 when the servers drifted from the manifests (or work is due), 0 when not."""
    result = _plan(state, paths, load_variables(var_pairs, var_files), PlanOptions(keep_going=keep_going))
    click.echo(render_json(result) if as_json else render_text(result))
    _report_errors(result)
    if result.has_changes or result.blocked:
        raise SystemExit(EXIT_PENDING)


@cli.command()
@click.argument("environment")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--full", is_flag=True, help="Rebuild from scratch even where the refresh mode is incremental.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def refresh(state: State, environment: str, paths: tuple[Path, ...], full: bool, yes: bool) -> None:
    """Refresh one environment now (from its manifest in PATHS, or from the spec it was applied with)."""
    plan_ = api.refresh_plan(state.config, environment, paths=paths, now=state.now, full=full)
    click.echo(render_text(plan_))
    _run(state, plan_, yes=yes, check_revisions=True)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show what would be removed, remove nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Also delete expired environments that are protected.")
@click.pass_obj
def gc(state: State, dry_run: bool, yes: bool, force: bool) -> None:
    """Delete expired environments and the leftovers of interrupted applies."""
    plan_ = api.gc_plan(state.config, options=PlanOptions(force=force), now=state.now)
    click.echo(render_text(plan_))
    if not dry_run:
        _run(state, plan_, yes=yes, check_revisions=True)


@cli.command()
@click.argument("environment")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def show(state: State, environment: str, as_json: bool) -> None:
    """Details of one environment and per-table statistics (rows, size, indexes, copy method and time)."""
    detail = api.show(state.config, environment)
    click.echo(json.dumps(show_json(detail), indent=2) if as_json else render_show(detail, state.now))


@cli.command()
@click.argument("environment")
@click.pass_obj
def export(state: State, environment: str) -> None:
    """Print an environment's manifest as YAML: the spec it was last applied with, from its ledger."""
    record, _ = api.find_record(state.config, environment)
    if not record.spec:
        raise ConflictError(f"{environment} has never been applied completely: there is no spec to export")
    try:
        spec = EnvironmentSpec.model_validate(record.spec)
    except ValidationError as exc:
        raise ConflictError(f"the spec recorded for {environment} does not validate any more: {exc}") from exc
    document = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    click.echo(f"# {environment}, exported by `moenv export` from the ledger on server {record.target_server}")
    click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)


@cli.command()
@click.argument("environment", required=False)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def history(state: State, environment: str | None, limit: int, as_json: bool) -> None:
    """Show the event log (newest first)."""
    events = api.history(state.config, environment, limit)
    if as_json:
        click.echo(json.dumps([e.model_dump(mode="json") for e in events], indent=2))
    else:
        click.echo(render_events(events))


def _print_error(exc: MoenvError) -> None:
    if isinstance(exc, ManifestError) and len(exc.problems) > 1:
        click.echo(f"error: {len(exc.problems)} problems:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
    else:
        click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `moenv` script; never shows a traceback unless --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="moenv", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted: nothing was changed.", err=True)
        code = EXIT_ERROR
    except click.ClickException as exc:
        exc.show()
        code = EXIT_ERROR
    except MoenvError as exc:
        if debug:
            traceback.print_exc()
        _print_error(exc)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)

"""Jinja2 rendering of manifest files (sandboxed, StrictUndefined); the only module importing jinja2."""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.exceptions
import jinja2.sandbox

from moenv.errors import ManifestError, Problem

_SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|SALT|KEY|CREDENTIAL|AUTH|PRIVATE|COOKIE|SESSION", re.IGNORECASE)
_URL_WITH_PASSWORD = re.compile(r"://[^/@\s]*:[^/@\s]*@")


def template_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The process environment as `env` in templates, without what could carry a secret: moenv's own
    variables (MOENV_URL holds a password), names that sound secret, and URLs with a password.
    A manifest is rendered into plans, the ledger and `moenv render`: a secret must not get there."""
    return {
        name: value
        for name, value in environ.items()
        if not name.upper().startswith("MOENV_")
        and not _SECRET_NAME.search(name)
        and not _URL_WITH_PASSWORD.search(value)
    }


def _environment(name: str, source: str) -> jinja2.sandbox.SandboxedEnvironment:
    # FunctionLoader, not DictLoader: the template's filename must be `name`, so that the
    # frames of a render error carry it and `_template_line` finds the template's line.
    # optimized=False: the optimizer folds constants at compile time, where an unsafe attribute
    # access would fail with no template frame, hence no line; unoptimized, it fails at render.
    return jinja2.sandbox.SandboxedEnvironment(
        optimized=False,
        loader=jinja2.FunctionLoader(lambda wanted: (source, name, lambda: True) if wanted == name else None),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


def _template_line(exc: BaseException, name: str) -> int | None:
    """Jinja rewrites tracebacks so template frames carry the template's own line numbers."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == name:
            line = frame.lineno
    return line


def render_template(
    path: Path, source: str, *, env: Mapping[str, str], variables: Mapping[str, str], now: datetime
) -> str:
    """Render one manifest file; every template problem becomes a ManifestError with file:line."""
    name = str(path)
    if "{{" not in source and "{%" not in source and "{#" not in source:
        return source
    try:
        template = _environment(name, source).get_template(name)
        return template.render(env=dict(env), vars=dict(variables), now=now)
    except jinja2.TemplateSyntaxError as exc:
        raise ManifestError(Problem(f"template syntax: {exc.message}", path, exc.lineno, None)) from exc
    except jinja2.UndefinedError as exc:
        hint = "vars.NAME comes from --var NAME=VALUE or --var-file; env.NAME from the environment"
        raise ManifestError(
            Problem(f"template: {exc.message}", path, _template_line(exc, name), None), hint=hint
        ) from exc
    except jinja2.exceptions.SecurityError as exc:
        raise ManifestError(Problem(f"template: not allowed: {exc}", path, _template_line(exc, name), None)) from exc
    except jinja2.TemplateError as exc:
        raise ManifestError(Problem(f"template: {exc.message or exc}", path, _template_line(exc, name), None)) from exc
    except RecursionError as exc:
        raise ManifestError(
            Problem("template: recursion too deep (a macro calling itself?)", path, _template_line(exc, name), None)
        ) from exc
    except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError, IndexError) as exc:
        # A template may compute (`{{ 1 / 0 }}`, `{{ x | int }}`); its failures are the manifest's.
        raise ManifestError(
            Problem(f"template: {type(exc).__name__}: {exc}", path, _template_line(exc, name), None)
        ) from exc

"""Which accepted manifest fields this version cannot honour yet; pure.

The format is the whole of SPEC §2, but a field that is accepted and then silently ignored
can leak data (an ignored `mask`) or mislead (an ignored `ttl`). Every such field is refused
here, at validate/plan time, until its implementation lands; remove its entry then.
"""

from __future__ import annotations

from moenv.models.manifest import EnvironmentSpec

Loc = tuple[str | int, ...]


def unsupported_fields(spec: EnvironmentSpec) -> list[tuple[Loc, str]]:
    """(field path, message) for every field set to something this version cannot do yet."""
    found: list[tuple[Loc, str]] = []
    # source.snapshot, grants and consistency: snapshot depend on the source's engine and version
    # (MatrixOne has them): refused when the source catalog is read, engines/plan_methods.py.

    def refuse(loc: Loc, what: str) -> None:
        found.append((("spec", *loc), f"{what} is not supported yet by this version of moenv"))

    return found

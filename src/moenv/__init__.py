"""moenv: database clone environments as code (MatrixOne, MySQL, MariaDB).

The public API: load manifests, plan, apply, and the errors. The CLI is built on the same calls.
"""

from __future__ import annotations

from moenv.errors import CloneError, ConfigError, ConflictError, DatabaseError, ManifestError, MoenvError

__version__ = "0.1.0"

__all__ = [
    "CloneError",
    "ConfigError",
    "ConflictError",
    "DatabaseError",
    "ManifestError",
    "MoenvError",
    "__version__",
]

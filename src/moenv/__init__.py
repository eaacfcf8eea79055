"""moenv: database clone environments as code (MatrixOne, MySQL, MariaDB).

The public API: load manifests, plan, apply, and the errors. The CLI is built on the same calls.
`moenv.connect(url).clone` / `await moenv.connect_async(url)` is the clone guide's API (moenv.clone).
"""

from __future__ import annotations

from moenv.clone import AsyncClient, AsyncCloneManager, Client, CloneManager, connect, connect_async
from moenv.errors import CloneError, ConfigError, ConflictError, DatabaseError, ManifestError, MoenvError

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncCloneManager",
    "Client",
    "CloneError",
    "CloneManager",
    "ConfigError",
    "ConflictError",
    "DatabaseError",
    "ManifestError",
    "MoenvError",
    "__version__",
    "connect",
    "connect_async",
]

"""Values only: manifests, catalogs, desired environments, ledger rows and plans."""

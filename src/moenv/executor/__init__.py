"""Writes servers: locks, same-server copies, staging and atomic swaps, ledger writes, apply_plan."""

"""Reads servers: the PyMySQL seam, bulk catalog reads, ledger reads."""

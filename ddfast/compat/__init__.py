"""Signature-compatible wrappers for reference code bases: ``dc`` (DC/DSA/DM) and ``mtt`` (MTT's ReparamModule)."""

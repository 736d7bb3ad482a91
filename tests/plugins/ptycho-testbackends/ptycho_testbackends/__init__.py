"""Backends for ptycho's own tests.

Importing this package (and ``specs``, where the entry points point) imports nothing
but ``ptycho_core.protocol``: listing backends must never import an implementation.
"""

"""Adapters that make ptycho usable from other applications.

Each adapter lives in its own subpackage and imports its host application only when it
is used: ``import ptycho_core`` never imports any of them, and importing an adapter
package itself imports nothing heavier than ``ptycho_core``.

- :mod:`ptycho_core.integrations.ptychodus` — every installed ptycho backend as a
  trainable reconstructor in Ptychodus (specs/ptychodus.md).
"""

"""A backend module that fails when imported (target of the 'broken-import' spec)."""

raise RuntimeError("ptycho_testbackends.broken fails at import on purpose")

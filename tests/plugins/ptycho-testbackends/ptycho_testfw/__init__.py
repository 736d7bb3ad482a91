"""A stand-in "framework" that is installed but incomplete.

``ptycho_testfw.missing_part`` does not exist: a backend that declares
``requires=("ptycho_testfw",)`` and imports that submodule must be reported as
unavailable (the framework install is broken), not as a bug in the backend.
"""

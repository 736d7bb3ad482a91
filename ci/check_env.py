"""Guard a tox environment: it holds exactly the frameworks its name promises.

`core` must have neither torch nor tensorflow (that env proves ptycho_core works
without them), and `onnx` neither but ONNX Runtime (it proves the deployment path needs
no framework); `torch`/`both` must have the CPU build of torch pinned by
ci/constraints.txt, unless PTYCHO_ALLOW_CUDA_TORCH=1 (a GPU developer machine).
"""

from __future__ import annotations

import importlib.util
import os
import sys

FRAMEWORKS = {"torch": ("torch", "lightning"), "tf": ("tensorflow", "keras")}


def main(env: str) -> int:
    wanted = {
        "core": set(),
        "torch": {"torch"},
        "tf": {"tf"},
        "both": {"torch", "tf"},
        "onnx": set(),
    }.get(env)
    if wanted is None:
        return 0
    problems = []
    if env == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        problems.append("onnxruntime is missing in the 'onnx' environment")
    for framework, modules in FRAMEWORKS.items():
        for module in modules:
            present = importlib.util.find_spec(module) is not None
            if present != (framework in wanted):
                state = "installed" if present else "missing"
                problems.append(f"{module} is {state} in the '{env}' environment")
    if "torch" in wanted and not problems:
        import torch

        if "+cpu" not in torch.__version__ and os.environ.get("PTYCHO_ALLOW_CUDA_TORCH") != "1":
            problems.append(
                f"torch {torch.__version__} is not the CPU build pinned by ci/constraints.txt"
            )
    for problem in problems:
        print(f"check_env: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

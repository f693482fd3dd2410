"""``python -m slimkern.backends.cuda.check``: build (or load) the CUDA extension, self-test it on this GPU and print
the verdict, and after a failed build the compiler output. Exit status 1 when the ``cuda`` backend is unavailable.

The first stage of the GPU check (``benchmarks/gpu/run.sh``). It sits above :mod:`.build` and the registry, which
know nothing of it.
"""

from __future__ import annotations

from pathlib import Path


def main() -> int:
    from .. import registry

    why = registry.list_backends()["cuda"]
    print(why or "cuda backend: built and validated")
    if why and "(log: " in why:
        print(Path(why.split("(log: ", 1)[1].rstrip(")")).read_text())
    return 1 if why else 0


if __name__ == "__main__":
    raise SystemExit(main())

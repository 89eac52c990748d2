"""Where the files the code reads at run time live: the shipped models (`weights/`) and the C++/CUDA sources
(`csrc/`). No torch import.

In the repository they stay top-level (`weights/`, `csrc/`, beside `codec/`), which is what a source checkout
and an editable install see. A wheel or a regular `pip install .` carries them inside the package as
`codec/weights` and `codec/csrc` (pyproject.toml maps the two folders there), because site-packages has no
room for top-level data folders. The packaged copy is looked for first.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The folder `name` ("weights" or "csrc"): inside the installed package, else beside it in a checkout."""
    packaged = _PACKAGE / name
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parent / name

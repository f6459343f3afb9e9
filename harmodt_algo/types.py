"""Array type aliases, written once for the whole package (mypy reads them)."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["F32", "F64", "I64", "Bool", "FloatArray"]

F32: TypeAlias = npt.NDArray[np.float32]
F64: TypeAlias = npt.NDArray[np.float64]
I64: TypeAlias = npt.NDArray[np.int64]
Bool: TypeAlias = npt.NDArray[np.bool_]
#: any float dtype (what users pass in; we convert at the boundary)
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]

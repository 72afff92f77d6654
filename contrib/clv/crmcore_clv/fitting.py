"""Maximum likelihood over log-parameters, shared by both models."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import crmcore

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


class FitError(crmcore.CRMError):
    """The model could not be fitted to the customers' data."""


def fit_log_params(negative_ll: Callable[[NDArray[np.float64]], float], count: int,
                   model: str) -> tuple[tuple[float, ...], float]:
    """Minimise ``negative_ll(params)`` over positive parameters.

    The optimiser works on log-parameters so every parameter stays positive
    without bounds (the usual device, e.g. in Hardie's notes).  Starts from
    all ones, which converges for well-posed data; a failure or a non-finite
    likelihood is a :class:`FitError` naming the model.
    """
    # Imported here so that FitError (which the package exports) does not load numpy and scipy.
    import numpy as np
    from scipy.optimize import minimize

    def objective(log_params: NDArray[np.float64]) -> float:
        value = negative_ll(np.exp(log_params))
        return value if np.isfinite(value) else np.inf

    result = minimize(objective, np.zeros(count), method="L-BFGS-B")
    if not np.isfinite(result.fun):
        raise FitError(f"{model}: the likelihood is not finite for these data ({result.message})")
    if not result.success:
        # L-BFGS-B sometimes stops on a line-search tolerance at the optimum;
        # Nelder-Mead from there confirms or improves it.
        result = minimize(objective, result.x, method="Nelder-Mead",
                          options={"maxiter": 20000, "xatol": 1e-8, "fatol": 1e-10})
        if not result.success:
            raise FitError(f"{model}: the optimiser did not converge ({result.message})")
    return tuple(float(v) for v in np.exp(result.x)), -float(result.fun)

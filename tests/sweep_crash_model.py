"""A model whose fit kills its own process for one parameter value (stands for a native
crash or an OOM kill); used by the sweep runner's crashed-worker test."""

from __future__ import annotations

import os

from sklearn.cross_decomposition import PLSRegression

CRASHING_N_COMPONENTS = 3


class CrashPLS(PLSRegression):
    """PLSRegression that calls ``os._exit(1)`` in fit when ``n_components == 3``."""

    def fit(self, X, y=None):
        if self.n_components == CRASHING_N_COMPONENTS:
            os._exit(1)
        return super().fit(X, y)

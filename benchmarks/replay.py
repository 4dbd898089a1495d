"""Replay and bundle latency.

Builds a realistic NIR chain on chemotools' fermentation spectra (SNV and
Savitzky-Golay shared, StandardScaler and PLS per fold, 5 folds), stores it in a
temporary workspace and measures:

- warm ``replay_chain`` latency against calling the same fitted objects directly
  (target: replay <= 1.2 x direct + 1 ms), for 1 and 200 samples;
- ``export_chain`` (.n4a) latency;
- ``predict(bundle)`` latency, warm (artifacts cached, hashes re-checked) and cold.

Usage: python benchmarks/replay.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from chemotools.datasets import load_fermentation_train
from chemotools.derivative import SavitzkyGolay
from chemotools.scatter import StandardNormalVariate
from sklearn.cross_decomposition import PLSRegression
from sklearn.preprocessing import StandardScaler

from n4a_store import ChainBuilder, ExecutionTrace, TraceStep, WorkspaceStore, predict, replay_chain
from n4a_store.chains.replay import clear_replay_cache

N_FOLDS = 5


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_median_seconds(a: Callable[[], object], b: Callable[[], object],
                          repeats: int) -> tuple[float, float]:
    """Median wall times of ``a`` and ``b``, interleaved (alternating which runs first) so both
    see the same machine load and cache state."""
    a(), b()
    times: dict[int, list[float]] = {0: [], 1: []}
    calls = (a, b)
    for i in range(repeats):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            calls[which]()
            times[which].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def build_chain(X: np.ndarray, y: np.ndarray):
    snv = StandardNormalVariate().fit(X)
    savgol = SavitzkyGolay(window_length=11, polyorder=2, deriv=1).fit(snv.transform(X))
    Z = savgol.transform(snv.transform(X))
    folds = {str(i): np.arange(len(X)) % N_FOLDS != i for i in range(N_FOLDS)}
    scalers = {f: StandardScaler().fit(Z[m]) for f, m in folds.items()}
    models = {f: PLSRegression(n_components=4).fit(scalers[f].transform(Z[m]), y[m])
              for f, m in folds.items()}
    trace = ExecutionTrace([
        TraceStep(0, "chemotools.scatter.StandardNormalVariate", shared=snv, stateless=True),
        TraceStep(1, "chemotools.derivative.SavitzkyGolay", {"window_length": 11}, shared=savgol,
                  stateless=True),
        TraceStep(2, "sklearn.preprocessing.StandardScaler", per_fold=scalers),
        TraceStep(3, "sklearn.cross_decomposition.PLSRegression", {"n_components": 4},
                  per_fold=models, is_model=True),
    ])

    def direct(X_new: np.ndarray) -> np.ndarray:
        Z_new = savgol.transform(snv.transform(X_new))
        preds = [models[f].predict(scalers[f].transform(Z_new)) for f in sorted(models)]
        return np.mean(np.stack(preds), axis=0).ravel()

    return trace, direct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    X, y = load_fermentation_train(set_output="polars")
    X, y = X.to_numpy(), y.to_numpy().ravel()
    trace, direct = build_chain(X, y)
    rng = np.random.default_rng(0)
    batches = {1: X[:1].copy(),
               200: X[rng.integers(0, len(X), 200)] * rng.normal(1.0, 0.01, (200, 1))}

    with tempfile.TemporaryDirectory() as tmp:
        store = WorkspaceStore(Path(tmp) / "ws")
        run_id = store.begin_run("bench", {}, [])
        pipeline_id = store.begin_pipeline(run_id, "bench", {}, [], "fermentation", "h")
        chain_id = store.save_chain(pipeline_id, **ChainBuilder(trace, store).build())
        store.complete_pipeline(pipeline_id, 0.0, 0.0, "rmse", 0)

        print(f"chain: SNV > SavitzkyGolay > StandardScaler(per fold) > PLS(4), {N_FOLDS} folds, "
              f"{X.shape[1]} features; median of {args.repeats} calls")
        clear_replay_cache()
        start = time.perf_counter()
        replay_chain(store, chain_id, batches[1])
        print(f"cold replay (catalog read + {2 + 2 * N_FOLDS} artifact loads): "
              f"{(time.perf_counter() - start) * 1e3:8.2f} ms")
        for n, batch in batches.items():
            assert np.allclose(replay_chain(store, chain_id, batch), direct(batch), rtol=1e-12)
            t_direct, t_replay = paired_median_seconds(
                lambda: direct(batch), lambda: replay_chain(store, chain_id, batch), args.repeats)
            budget = 1.2 * t_direct + 1e-3
            print(f"n={n:4d}  direct {t_direct * 1e3:7.3f} ms   replay {t_replay * 1e3:7.3f} ms   "
                  f"ratio {t_replay / t_direct:5.2f}x   overhead {(t_replay - t_direct) * 1e6:7.1f} us   "
                  f"target <= {budget * 1e3:.3f} ms: {'OK' if t_replay <= budget else 'MISSED'}")

        bundle = Path(tmp) / "model.n4a"
        t_export = median_seconds(lambda: store.export_chain(chain_id, bundle), max(5, args.repeats // 20))
        print(f"export_chain (.n4a, {bundle.stat().st_size / 1024:.0f} KiB): {t_export * 1e3:8.2f} ms")
        script = Path(tmp) / "model.n4a.py"
        t_script = median_seconds(lambda: store.export_chain(chain_id, script, format="n4a.py"),
                                  max(5, args.repeats // 20))
        print(f"export_chain (.n4a.py, {script.stat().st_size / 1024:.0f} KiB): {t_script * 1e3:8.2f} ms")
        batch = batches[200]
        assert np.array_equal(predict(bundle, batch), replay_chain(store, chain_id, batch))
        t_warm = median_seconds(lambda: predict(bundle, batch), args.repeats)
        t_cold = median_seconds(lambda: predict(bundle, batch, use_cache=False), max(5, args.repeats // 10))
        print(f"predict(bundle), n=200, warm (hash check + cached objects): {t_warm * 1e3:8.2f} ms")
        print(f"predict(bundle), n=200, cold (hash check + unpickle all):   {t_cold * 1e3:8.2f} ms")
        store.close()


if __name__ == "__main__":
    main()

"""Where an MLP epoch's time goes, per minibatch, for the next round of tuning.

    python tools/epoch_parts.py [small|medium|large] [--backend numpy] [--tape]

Times one epoch of ``xpdl bench``'s runner and its matrix-multiply bound (interleaved, a
short pause and one untimed epoch before each, medians of 7), then the parts inside the
epoch by wrapping them: the native module's functions (matmul, take, ...), the softmax
head and the optimizer step. Wrapping costs about a microsecond per call, so the parts of
the small size read high. A profiler for people, not a benchmark: ``xpdl bench`` and asv
are the measurements.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("size", nargs="?", default="medium")
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--tape", action="store_true", help="the tape path instead of the fused")
    args = ap.parse_args()

    from xpdl.bench import SIZES, _XpdlRunner
    from xpdl.datasets import make_classification

    sizes, batch = SIZES[args.size]
    nb = 20
    X, y = make_classification(batch * nb, sizes[0], n_classes=sizes[-1], random_state=0)
    r = _XpdlRunner(args.backend, sizes, batch, X, y, tape=args.tape)
    te, tb = [], []
    for _ in range(7):
        for f, acc in ((r.epoch, te), (r.bound, tb)):
            time.sleep(0.1)
            f()
            t0 = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t0)
    e, b = statistics.median(te), statistics.median(tb)
    print(f"{args.size} {'tape' if args.tape else 'fused'} on {args.backend}: epoch "
          f"{e / nb * 1e6:.0f} us/batch, bound {b / nb * 1e6:.0f} us/batch, ratio {e / b:.3f}")

    parts = {}

    def timed(name, f):
        def g(*a, **k):
            t0 = time.perf_counter()
            out = f(*a, **k)
            parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0
            return out
        return g

    step = getattr(r.m, "_fused_cache", None)
    if step is not None and step.nat is not None and not args.tape:
        class Timed:
            def __init__(self, mod):
                self._mod = mod

            def __getattr__(self, k):
                v = getattr(self._mod, k)
                return timed(k, v) if callable(v) else v

        step.nat = Timed(step.nat)
        step._head = timed("head (loss and its gradient)", step._head)
        step._stepper_state = None  # the next step makes a new, wrapped stepper
        opt = r.m._optimizer
        make = opt.flat_stepper
        opt.flat_stepper = lambda *a, **k: timed("optimizer step (with L2)", make(*a, **k))
    r.epoch()
    parts.clear()
    reps = 5
    for _ in range(reps):
        r.epoch()
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {k:32s} {v / (reps * nb) * 1e6:9.1f} us/batch")


if __name__ == "__main__":
    main()

"""Where an MLP epoch's time goes, per minibatch, for the next round of tuning.

    python tools/epoch_parts.py [small|medium|large] [--backend numpy] [--tape]

Times one epoch of ``xpdl bench``'s runner and its matrix-multiply bound (interleaved, a
short pause and one untimed epoch before each, medians of 7), then the parts inside the
epoch by wrapping them: every call of the replayed program (grouped by primitive,
forward and backward) and the optimizer step, and what is left of those same epochs
(Python between the calls, batching, the step's guards). Wrapping costs about a
microsecond per call, so the parts of the small size read high. A profiler for people,
not a benchmark: ``xpdl bench`` and asv are the measurements.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("size", nargs="?", default="medium")
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--tape", action="store_true",
                    help="every step eagerly on the tape instead of the replayed program")
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
    print(f"{args.size} {'tape' if args.tape else 'replayed'} on {args.backend}: epoch "
          f"{e / nb * 1e6:.0f} us/batch, bound {b / nb * 1e6:.0f} us/batch, ratio {e / b:.3f}")

    parts = {}

    def timed(name, f):
        def g(*a, **k):
            t0 = time.perf_counter()
            out = f(*a, **k)
            parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0
            return out
        return g

    step = getattr(r.m, "_step_cache", (None,) * 4)[3]
    if step is not None and not args.tape:
        opt = r.m._optimizer
        step._flat = None  # the next step makes a new, wrapped stepper
        make = opt.flat_stepper
        opt.flat_stepper = lambda *a, **k: timed("optimizer step", make(*a, **k))
        r.epoch()  # builds the layout and binds the plans to it
    progs = [] if step is None or args.tape else \
        [e[1] for e in step._programs.values() if e[0] == "ok"]
    for prog in progs:  # time every replayed call, grouped by primitive and direction
        # the plain plan (other namespaces) and the plans for a flat layout
        plans = [(prog, "steps", prog.nodes)] + [(plan, 0, plan[3])
                                                  for plan in prog._flat_plans.values()]
        for holder, where, nodes in plans:
            steps = getattr(holder, where) if isinstance(where, str) else holder[where]
            wrapped = []
            for (fn, ins, outs, multi, free), node in zip(steps, nodes):
                sig = node[4]
                name = {"f": "forward ", "b": "backward "}.get(sig[0], "") + (
                    sig[1] if sig[0] in "fb" else {"a": "gradient sums", "u": "unbroadcast",
                                                    "c": "casts"}[sig[0]])

                def g(*a, _fn=fn, _name=name):
                    t0 = time.perf_counter()
                    out = _fn(*a)
                    parts[_name] = parts.get(_name, 0.0) + time.perf_counter() - t0
                    return out

                wrapped.append((g, ins, outs, multi, free))
            if isinstance(where, str):
                setattr(holder, where, wrapped)
            else:
                holder[where] = wrapped
    r.epoch()
    parts.clear()
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        r.epoch()
    wrapped = time.perf_counter() - t0
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {k:32s} {v / (reps * nb) * 1e6:9.1f} us/batch")
    # the same epochs' time outside the timed calls: Python between them, the batches,
    # the step's guards (and the wrappers' own cost, about a microsecond per call)
    print(f"  {'rest of the wrapped epochs':32s} "
          f"{(wrapped - sum(parts.values())) / (reps * nb) * 1e6:9.1f} us/batch "
          f"(of {wrapped / (reps * nb) * 1e6:.1f})")


if __name__ == "__main__":
    main()

"""Synthetic renderer throughput: views/s with every label, 1 and N worker processes, peak RSS.

Usage::

    python benchmarks/bench_renderer.py [--resolution 256] [--buildings 4] [--points 4]
                                        [--views 3] [--workers 1 2]

Each worker process warms up (numba cache load, first render) and waits on a barrier; then every
worker writes its share of buildings and reports its views, seconds and peak RSS. Throughput is
all views over the slowest worker's time. A stage breakdown (render, labels, encoding + writing)
runs in this process, with the bare ray cast as the baseline, because these machines are noisy:
compare ratios within one run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _worker(args: tuple) -> tuple[int, float, float, float]:
    names, barrier, root, seed, resolution, points, views = args
    from taskonomy.datamodules.synth.building import write_building

    write_building(Path(root) / f"warm-{names[0]}", "warm", seed, 32, 1, 1)
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    count = 0
    for name in names:
        count += write_building(Path(root) / name, name, seed, resolution, points, views)
    return count, time.perf_counter() - start, _peak_rss_mb(), time.process_time() - cpu


def throughput(workers: int, buildings: int, resolution: int, points: int, views: int,
               seed: int = 0) -> dict[str, float]:
    """Views/s of ``workers`` processes writing ``buildings`` buildings (all labels)."""
    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    barrier = manager.Barrier(workers)
    names = [f"bench{index:03d}" for index in range(buildings)]
    shares = [names[k::workers] for k in range(workers)]
    with tempfile.TemporaryDirectory() as root, ctx.Pool(workers) as pool:
        results = pool.map(_worker, [(share, barrier, root, seed, resolution, points, views)
                                     for share in shares])
    manager.shutdown()
    total = sum(r[0] for r in results)
    seconds = max(r[1] for r in results)
    return {"views": total, "seconds": seconds, "views_per_s": total / seconds,
            "peak_rss_mb": max(r[2] for r in results),
            "cpu_ms_per_view": 1000.0 * sum(r[3] for r in results) / total}


def stages(resolution: int, points: int, views: int, seed: int = 0) -> dict[str, float]:
    """Seconds per view of each stage in this process, and of the bare ray cast."""
    from taskonomy.datamodules.domains import encode_domain
    from taskonomy.datamodules.synth import raycast
    from taskonomy.datamodules.synth.building import plan_building
    from taskonomy.datamodules.synth.labels import view_labels
    from taskonomy.datamodules.synth.render import camera_rays, render_view

    plan_building("warm", seed, 32, 1, 1)
    scenes, fixated = plan_building("stages", seed, resolution, points, views)
    totals = {"ray cast only (baseline)": 0.0, "render (rgb + buffers)": 0.0, "labels": 0.0,
              "encode": 0.0}
    count = 0
    for point in fixated:
        scene = scenes[point.room]
        for view in point.views:
            start = time.perf_counter()
            raycast.trace_rays(scene.prims, scene.materials, scene.lights, view.camera.centre,
                               camera_rays(view.camera).reshape(-1, 3), shade=False)
            totals["ray cast only (baseline)"] += time.perf_counter() - start
            start = time.perf_counter()
            buffers = render_view(scene, view.camera)
            totals["render (rgb + buffers)"] += time.perf_counter() - start
            start = time.perf_counter()
            labels = view_labels(buffers, scene.room_type)
            totals["labels"] += time.perf_counter() - start
            start = time.perf_counter()
            for domain, value in labels.items():
                encode_domain(domain, value)
            totals["encode"] += time.perf_counter() - start
            count += 1
    return {k: v / count for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--buildings", type=int, default=4)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(above 0 before the run, other processes compete for the cores)")
    per_view = stages(args.resolution, args.points, args.views)
    baseline = per_view["ray cast only (baseline)"]
    print(f"stages per view at {args.resolution}² (this process):")
    for name, seconds in per_view.items():
        print(f"  {name:26s} {seconds * 1000:7.1f} ms  ({seconds / baseline:4.1f}× ray cast)")
    print(f"  {'sum of stages':26s} {sum(list(per_view.values())[1:]) * 1000:7.1f} ms")
    for workers in args.workers:
        result = throughput(workers, args.buildings, args.resolution, args.points, args.views)
        print(f"workers={workers}: {result['views']:.0f} views in {result['seconds']:.1f} s = "
              f"{result['views_per_s']:.1f} views/s with every label; "
              f"peak RSS per process {result['peak_rss_mb']:.0f} MB; "
              f"{result['cpu_ms_per_view']:.0f} ms CPU per view "
              f"(= {1000 * workers / result['cpu_ms_per_view']:.1f} views/s on {workers} free "
              "cores)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

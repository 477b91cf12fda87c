"""Synthetic renderer throughput: views/s with every label, 1 and N worker processes, peak RSS.

Usage::

    python benchmarks/bench_renderer.py [--resolution 256] [--buildings 4] [--points 4]
                                        [--views 3] [--workers 1 2]

Each worker process warms up (numba cache load, first render) and waits on a barrier; then every
worker writes its share of buildings and reports its views, seconds and peak RSS. Throughput is
all views over the slowest worker's time; CPU milliseconds per view give the throughput the
workers would reach on free cores. A stage breakdown (CPU time of render, labels, encoding) runs
in this process next to reference paths measured on the same views in the same run (the untiled
ray caster, OpenCV's Felzenszwalb), because these machines are shared and noisy: compare ratios
within one run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def _reference_render(scene, camera):
    """The untiled path, as the renderer ran before tiling: culling by the whole view frustum and
    by the bounding box of all visible points; no silhouette supersampling, no labels."""
    import numpy as np

    from taskonomy.datamodules.synth import raycast
    from taskonomy.datamodules.synth.render import camera_rays

    flat = camera_rays(camera).reshape(-1, 3)
    margin = 1.0 / camera.focal
    candidates = raycast.frustum_candidates(
        scene.prims, camera.world_to_camera, camera.width / 2 / camera.focal + margin,
        camera.height / 2 / camera.focal + margin)
    out = raycast.trace_rays(scene.prims, scene.materials, scene.lights, camera.centre, flat,
                             False, candidates)
    hit = out["index"] >= 0
    points = camera.centre + np.where(hit, out["t"], 0.0)[:, None] * flat
    occluders = raycast.shadow_candidates(scene.prims, scene.lights, points[hit].min(axis=0)
                                          - 0.05, points[hit].max(axis=0) + 0.05)
    return raycast.shade_points(scene.prims, scene.materials, scene.lights, points,
                                out["normal"], out["index"], occluders)


def _reference_segments(buffers):
    """Both unsupervised segmentations with OpenCV's GraphSegmentation (the previous labels)."""
    import cv2
    import numpy as np

    from taskonomy.datamodules.synth import labels

    size = labels._min_size(buffers.rgb.shape)
    cv2.ximgproc.segmentation.createGraphSegmentation(0.8, 400.0, size).processImage(buffers.rgb)
    z = np.where(np.isfinite(buffers.zdepth), buffers.zdepth, 0.0)
    stack = np.concatenate([np.log1p(z)[..., None] / max(float(np.log1p(z.max())), 1e-6) * 255,
                            (buffers.normal + 1.0) * 127.5,
                            np.clip(buffers.curvature[..., :1] * 10.0, 0.0, 255.0)], axis=-1)
    cv2.ximgproc.segmentation.createGraphSegmentation(0.5, 600.0, size).processImage(
        stack.astype(np.float32))


def stages(resolution: int, points: int, views: int, seed: int = 0) -> dict[str, float]:
    """CPU seconds per view of each stage in this process, and of the reference paths.

    Each reference runs right next to the stage it is compared with, on the same view, so load
    from other processes affects both alike.
    """
    from taskonomy.datamodules.domains import encode_domain
    from taskonomy.datamodules.synth.building import plan_building
    from taskonomy.datamodules.synth.labels import (
        segment_unsup2d,
        segment_unsup25d,
        view_labels,
    )
    from taskonomy.datamodules.synth.render import render_view

    plan_building("warm", seed, 32, 1, 1)
    scenes, fixated = plan_building("stages", seed, resolution, points, views)
    totals = dict.fromkeys(STAGES, 0.0)
    count = 0

    @contextmanager
    def clock(name: str) -> Iterator[None]:
        start = time.process_time()
        yield
        totals[name] += time.process_time() - start

    for point in fixated:
        scene = scenes[point.room]
        for view in point.views:
            with clock(STAGES[0]):
                _reference_render(scene, view.camera)
            with clock(STAGES[1]):
                buffers = render_view(scene, view.camera)
            with clock(STAGES[2]):
                _reference_segments(buffers)
            with clock(STAGES[3]):
                segment_unsup2d(buffers.rgb)
                segment_unsup25d(buffers.zdepth, buffers.normal, buffers.curvature)
            with clock(STAGES[4]):
                labels = view_labels(buffers, scene.room_type)
            with clock(STAGES[5]):
                for domain, value in labels.items():
                    encode_domain(domain, value)
            count += 1
    return {k: v / count for k, v in totals.items()}


#: Stage names; "reference:" rows are the comparison paths, not part of the pipeline.
STAGES = (
    "reference: untiled primary rays + shading",
    "render (tiled: rays, shading, AA, geometry)",
    "reference: OpenCV Felzenszwalb x2",
    "segments (numba Felzenszwalb x2)",
    "labels (all, segments included)",
    "PNG/npy/json encoding",
)
PIPELINE = (STAGES[1], STAGES[4], STAGES[5])


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
    print(f"CPU time per view at {args.resolution}² in this process:")
    for name, seconds in per_view.items():
        print(f"  {name:45s} {seconds * 1000:7.1f} ms")
    pipeline = sum(per_view[name] for name in PIPELINE)
    print(f"  {'pipeline (render + labels + encoding)':45s} {pipeline * 1000:7.1f} ms "
          f"(= {2 / pipeline:.1f} views/s on 2 free cores)")
    print(f"  speed-up vs reference in this run: primary rays + shading "
          f"{per_view[STAGES[0]] / per_view[STAGES[1]]:.2f}x (the tiled render also "
          f"antialiases and makes every geometry buffer), Felzenszwalb "
          f"{per_view[STAGES[2]] / per_view[STAGES[3]]:.2f}x")
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

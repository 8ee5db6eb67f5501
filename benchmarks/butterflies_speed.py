"""How many synthetic butterflies per second does one CPU core draw?

    python benchmarks/butterflies_speed.py              # 32 and 64 px, ~2 s each
    python benchmarks/butterflies_speed.py --sizes 32 128 --seconds 5

Single thread: the thread-count variables are set before numpy is imported, so a multithreaded
BLAS cannot help (the renderer is elementwise numpy and would not use it anyway). Rates are per
second of this process's CPU time, so other jobs sharing the machine do not lower them much.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

from ddlearn.data.butterflies import make_butterfly  # noqa: E402


def images_per_second(size: int, seconds: float) -> float:
    make_butterfly(0, size)  # warm-up: caches the pixel grid
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for seed in range(count, count + 100):
            make_butterfly(seed, size)
        count += 100
    return count / (time.process_time() - start)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print("| size | images per CPU-second (1 thread) |\n|---|---|")
    for size in args.sizes:
        print(f"| {size} px | {images_per_second(size, args.seconds):,.0f} |")

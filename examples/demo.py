"""raylite's main demo: three workloads run serially, then as raylite tasks.

The workloads are the ones of the Ray tasks chapter raylite was built from
(see the seed documents): Fibonacci lists, a Monte Carlo estimate of pi, and
image preprocessing. The program is a plain Ray program; only the import differs:

    import raylite as ray

Images are generated locally (random noise over colour gradients), so the demo
needs no network; Pillow and numpy stand in for torchvision and torch.

    python examples/demo.py            # full run, about a minute on 2 cores
    python examples/demo.py --quick    # shorter run
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import time

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

import raylite as ray

NUM_CPUS = os.cpu_count() or 1
THUMB_SIZE = (64, 64)


# ---------------------------------------------------------------------------
# Workload 1: Fibonacci lists
# ---------------------------------------------------------------------------


def generate_fibonacci(sequence_size: int) -> int:
    fibonacci: list[int] = []
    for i in range(sequence_size):
        if i < 2:
            fibonacci.append(i)
            continue
        fibonacci.append(fibonacci[i - 1] + fibonacci[i - 2])
    return len(fibonacci)


@ray.remote
def generate_fibonacci_distributed(sequence_size: int) -> int:
    return generate_fibonacci(sequence_size)


def run_fibonacci(sequence_size: int) -> tuple[float, float]:
    print(f"\n== Fibonacci: {NUM_CPUS} lists of {sequence_size:,} numbers ==")
    start = time.time()
    local = [generate_fibonacci(sequence_size) for _ in range(NUM_CPUS)]
    elapsed_serial = time.time() - start
    print(f"Serial | elapsed: {elapsed_serial:.2f} sec")

    start = time.time()
    remote = ray.get(
        [generate_fibonacci_distributed.remote(sequence_size) for _ in range(NUM_CPUS)]
    )
    elapsed_dist = time.time() - start
    print(f"Distributed | elapsed: {elapsed_dist:.2f} sec")
    assert local == remote, (local, remote)
    return elapsed_serial, elapsed_dist


# ---------------------------------------------------------------------------
# Workload 2: Monte Carlo estimate of pi
# ---------------------------------------------------------------------------

NUM_SAMPLING_TASKS = NUM_CPUS


def sampling_task(num_samples: int, task_id: int, verbose: bool = True) -> int:
    num_inside = 0
    for _ in range(num_samples):
        x, y = random.uniform(-1, 1), random.uniform(-1, 1)
        # the point lies inside the unit circle
        if math.hypot(x, y) <= 1:
            num_inside += 1
    if verbose:
        print(f"Task id: {task_id} | Samples in the circle: {num_inside}")
    return num_inside


@ray.remote
def sample_task_distribute(sample_size: int, i: int) -> int:
    return sampling_task(sample_size, i)


def calculate_pi(results: list[int], total_num_samples: int) -> float:
    return (sum(results) * 4) / total_num_samples


def run_monte_carlo(total_samples: int) -> tuple[float, float]:
    # The seed fixes the samples per task; here the total is fixed instead, so the
    # serial run takes a few seconds whatever os.cpu_count() is.
    samples_per_task = total_samples // NUM_SAMPLING_TASKS
    total = samples_per_task * NUM_SAMPLING_TASKS
    print(f"\n== Monte Carlo pi: {NUM_SAMPLING_TASKS} tasks x {samples_per_task:,} samples ==")

    start = time.time()
    results = [sampling_task(samples_per_task, i + 1) for i in range(NUM_SAMPLING_TASKS)]
    pi = calculate_pi(results, total)
    elapsed_serial = time.time() - start
    print(f"Serial | estimated value of π is: {pi:5f}, elapsed: {elapsed_serial:.2f} sec")

    start = time.time()
    results = ray.get(
        [sample_task_distribute.remote(samples_per_task, i + 1) for i in range(NUM_SAMPLING_TASKS)]
    )
    pi = calculate_pi(results, total)
    elapsed_dist = time.time() - start
    print(f"Distributed | estimated value of π is: {pi:5f}, elapsed: {elapsed_dist:.2f} sec")
    assert abs(pi - math.pi) < 0.05, pi
    return elapsed_serial, elapsed_dist


# ---------------------------------------------------------------------------
# Workload 3: image preprocessing
# ---------------------------------------------------------------------------


def generate_image(seed: int, size: tuple[int, int] = (1500, 1000)) -> Image.Image:
    """An RGB image: per-channel gradients in a random direction plus noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    channels = []
    for _ in range(3):
        angle = rng.uniform(0, 2 * math.pi)
        ramp = xs * math.cos(angle) + ys * math.sin(angle)
        channels.append((ramp - ramp.min()) * (200.0 / (ramp.max() - ramp.min())))
    noise = rng.integers(0, 56, size=(height, width, 3), dtype=np.uint8)
    pixels = np.stack(channels, axis=-1).astype(np.uint8) + noise
    return Image.fromarray(pixels, mode="RGB")


def random_crop(img: Image.Image, size: tuple[int, int], rng: random.Random) -> Image.Image:
    width, height = img.size
    left = rng.randint(0, width - size[0])
    top = rng.randint(0, height - size[1])
    return img.crop((left, top, left + size[0], top + size[1]))


def trivial_augment(
    img: Image.Image, rng: random.Random, num_magnitude_bins: int = 31
) -> Image.Image:
    """One random operation at a random strength, like torchvision's TrivialAugmentWide."""
    level = rng.randrange(num_magnitude_bins) / (num_magnitude_bins - 1)
    ops = [
        lambda im: im.rotate(level * 135.0 * rng.choice((-1, 1))),
        lambda im: ImageEnhance.Brightness(im).enhance(1.0 + level * 0.99 * rng.choice((-1, 1))),
        lambda im: ImageEnhance.Color(im).enhance(1.0 + level * 0.99 * rng.choice((-1, 1))),
        lambda im: ImageEnhance.Contrast(im).enhance(1.0 + level * 0.99 * rng.choice((-1, 1))),
        lambda im: ImageEnhance.Sharpness(im).enhance(1.0 + level * 0.99 * rng.choice((-1, 1))),
        lambda im: ImageOps.posterize(im, 8 - int(level * 6)),
        lambda im: ImageOps.solarize(im, int(255 * (1.0 - level))),
        ImageOps.autocontrast,
        ImageOps.equalize,
    ]
    return rng.choice(ops)(img)


def transform_image(img_ref: object, fetch_image: bool = True, verbose: bool = False):
    """Blur, grayscale, random crops, augmentation, then array arithmetic."""
    # Serially, the image is fetched from the object store here; as a task, raylite
    # resolved the reference before the call.
    orig_img = ray.get(img_ref) if fetch_image else img_ref
    before_shape = orig_img.size
    rng = random.Random(42)

    blurred = orig_img.filter(ImageFilter.GaussianBlur(radius=2))
    gray_img = ImageOps.grayscale(blurred)
    crops = [random_crop(orig_img, (224, 224), rng) for _ in range(4)]
    augmented_img = trivial_augment(blurred, rng)

    # numpy in place of torch tensors
    array = np.asarray(augmented_img, dtype=np.float32) / 255.0
    t_array = np.transpose(array, (1, 0, 2))
    for _ in range(8):
        np.power(array, 3).sum()
        np.power(t_array, 3).sum()
        np.multiply(array, rng.randint(2, 10))
        np.multiply(t_array, rng.randint(2, 10))
        np.multiply(array, array)
        np.multiply(t_array, t_array)
    gray = np.asarray(gray_img, dtype=np.float32)
    np.abs(np.diff(gray, axis=0)).sum() + np.abs(np.diff(gray, axis=1)).sum()
    for crop in crops:
        np.asarray(crop, dtype=np.float32).std(axis=(0, 1))

    augmented_img.thumbnail(THUMB_SIZE)
    after_shape = augmented_img.size
    if verbose:
        print(
            f"original shape: {before_shape}, array shape: {array.shape}, transposed: {t_array.shape}"
        )
    return before_shape, after_shape


@ray.remote
def augment_image_distributed(image_ref: object, fetch_image: bool):
    return transform_image(image_ref, fetch_image=fetch_image)


def run_serially(img_list_refs: list) -> list:
    return [transform_image(image_ref, fetch_image=True) for image_ref in img_list_refs]


def run_distributed(img_list_refs: list) -> list:
    return ray.get([augment_image_distributed.remote(img, False) for img in img_list_refs])


def run_images(num_images: int) -> tuple[float, float]:
    print(f"\n== Image preprocessing: {num_images} generated images of 1500x1000 ==")
    start = time.time()
    images_list_refs = [ray.put(generate_image(seed)) for seed in range(num_images)]
    print(
        f"Generated and put {num_images} images in the object store: {time.time() - start:.2f} sec"
    )

    print(f"\nRunning {num_images} images serially....")
    start = time.time()
    serial_results = run_serially(images_list_refs)
    elapsed_serial = time.time() - start
    print(f"Serial transformations of {num_images} images: {elapsed_serial:.2f} sec")

    print(f"\nRunning {num_images} images distributed....")
    start = time.time()
    distributed_results = run_distributed(images_list_refs)
    elapsed_dist = time.time() - start
    print(f"Distributed transformations of {num_images} images: {elapsed_dist:.2f} sec")
    assert [tuple(map(tuple, r)) for r in serial_results] == [
        tuple(map(tuple, r)) for r in distributed_results
    ], (serial_results, distributed_results)
    return elapsed_serial, elapsed_dist


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, shorter run")
    args = parser.parse_args(argv)

    sequence_size = 80_000 if args.quick else 150_000
    total_samples = 2_000_000 if args.quick else 10_000_000
    num_images = 8 if args.quick else 20

    start = time.time()
    if ray.is_initialized():
        ray.shutdown()
    ray.init(logging_level=logging.ERROR)
    print(f"raylite started in {time.time() - start:.2f} sec; os.cpu_count() = {NUM_CPUS}")
    try:
        timings = {
            "fib": run_fibonacci(sequence_size),
            "pi": run_monte_carlo(total_samples),
            "img": run_images(num_images),
        }
    finally:
        ray.shutdown()

    print("\nworkload    serial (s)   distributed (s)   speedup")
    for name, (serial, dist) in timings.items():
        print(f"{name:<10}{serial:>11.2f}{dist:>18.2f}{serial / dist:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

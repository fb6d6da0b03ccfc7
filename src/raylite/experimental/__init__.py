"""ray.experimental: APIs Ray marks experimental (tqdm_ray: progress bars from tasks)."""

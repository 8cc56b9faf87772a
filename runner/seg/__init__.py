"""Data side of the `monai_seg` workload: synthetic volumes, profiler, splits and metrics.

Every module here needs the train extra (numpy, nibabel, scipy, scikit-image); nothing outside
``runner.seg`` imports them, and this package file imports nothing, so ``import runner`` and
``import runner.seg`` stay cheap and work on a pod without the extra.
"""

"""The compiled parts: curation's count kernels (src/transferlab/curate/_native.c) and the 8-bit optimizers'
fused CPU step (src/transferlab/optim/_native.c). Both are optional: where no C compiler is at hand the build
skips them and their pure-Python (torch) twins run, with the same results."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(f"transferlab.{package}._native", [f"src/transferlab/{package}/_native.c"],
                             extra_compile_args=["-O3"], optional=True) for package in ("curate", "optim")])

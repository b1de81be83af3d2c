"""The one compiled part: curation's count kernels (src/transferlab/curate/_native.c). It is optional: where
no C compiler is at hand the build skips it and curation runs its pure-Python twins, with the same results."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("transferlab.curate._native", ["src/transferlab/curate/_native.c"],
                             extra_compile_args=["-O3"], optional=True)])

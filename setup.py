"""The compiled parts, both optional: the tar shard kernels (src/transferlab/data/_tar.c: streaming's index and
curation's count stage) and curation's caption kernels (src/transferlab/curate/_native.c). Where no C compiler
is at hand the build skips them and their pure-Python twins run, with the same results."""

from setuptools import Extension, setup

COMMON = ["src/transferlab/kernels_common.h"]

setup(ext_modules=[
    Extension("transferlab.data._tar", ["src/transferlab/data/_tar.c"], depends=COMMON, extra_compile_args=["-O3"],
              optional=True),
    Extension("transferlab.curate._native", ["src/transferlab/curate/_native.c"], depends=COMMON,
              extra_compile_args=["-O3"], optional=True),
])

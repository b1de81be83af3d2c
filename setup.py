"""The compiled parts, all optional: the tar shard kernels (src/transferlab/data/tar/_tar.c: streaming's index and
curation's count stage), curation's caption kernels (src/transferlab/curate/_native.c) and the 8-bit optimizers'
fused CPU step (src/transferlab/optim/_native.c). Where no C compiler is at hand the build skips them and their
pure-Python (torch) twins run, with the same results."""

from setuptools import Extension, setup

COMMON = ["src/transferlab/kernels_common.h"]
SOURCES = {"transferlab.data.tar._tar": "src/transferlab/data/tar/_tar.c",
           "transferlab.curate._native": "src/transferlab/curate/_native.c",
           "transferlab.optim._native": "src/transferlab/optim/_native.c"}

setup(ext_modules=[Extension(name, [source], depends=COMMON, extra_compile_args=["-O3"], optional=True)
                   for name, source in SOURCES.items()])

"""Build hook for the one C extension (the Hamming scan kernels, rescoring dots and gathers);
everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "zembed.store._hamming",
            sources=[
                "store/_hamming.c",
                "store/csrc/dispatch.c",
                "store/csrc/scan_generic.c",
                "store/csrc/scan_avx2.c",
                "store/csrc/scan_avx512.c",
                "store/csrc/scan_neon.c",
                "store/csrc/rescore.c",
                "store/csrc/gather.c",
                "store/csrc/bulk.c",
            ],
            depends=["store/csrc/scan.h", "store/csrc/pymod.h"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wno-unused-function"],
        )
    ]
)

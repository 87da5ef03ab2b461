"""Build hook for the one C extension (the Hamming scan kernel); everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "zembed.store._hamming",
            sources=["store/_hamming.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wno-unused-function"],
        )
    ]
)

"""Packaging for ssfl-recon: self-supervised feature learning + reconstruction of cardiac cine MRI."""
from setuptools import setup

PACKAGES = [
    "data_loader",
    "feature_learning",
    "reconstruction",
    "evaluation",
    "utils",
    "scripts",
]

setup(
    name="ssfl-recon",
    version="0.1.0",
    description=(
        "TensorFlow 2 / Keras 3 port of SSFL-Recon: self-supervised feature learning and feature-assisted "
        "self-supervised reconstruction of undersampled cardiac cine MRI"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_data={"": ["*.yaml"]},
    install_requires=[
        "tensorflow>=2.16",
        "numpy",
        "scipy",
        "h5py",
        "scikit-image",
        "matplotlib",
        "pyyaml",
        # TensorBoard logs of every run; TF >= 2.20 no longer installs it.
        "tensorboard",
    ],
    extras_require={"test": ["pytest", "ismrmrd"], "ocmr": ["ismrmrd"]},
    entry_points={"console_scripts": ["ssfl-recon=scripts.cli:main"]},
)

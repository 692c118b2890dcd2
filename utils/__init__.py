"""Shared building blocks. Importing any package of this project first sets TensorFlow's environment defaults
(:func:`utils.machine.set_tensorflow_environment`: oneDNN kernels on every x86 CPU), so it must not import
TensorFlow itself."""
from utils.machine import set_tensorflow_environment

set_tensorflow_environment()

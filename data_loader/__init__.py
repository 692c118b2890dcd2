import utils  # noqa: F401  (sets TensorFlow's environment defaults before it loads: utils/__init__.py)

"""seqgen: decoding experiments with recurrent language models in JAX."""

__version__ = "0.1.0"

"""xdetox: cross-lingual detoxification of multilingual LLMs by supervised fine-tuning."""

from xdetox.errors import XdetoxInputError

__version__ = "0.1.0"
__all__ = ["XdetoxInputError", "__version__"]

"""swayscope: did the LoRA adapter really change the model, or is the base model still talking?"""

from swayscope.errors import SwayscopeError

__version__ = "0.1.0"

__all__ = ["SwayscopeError", "__version__"]

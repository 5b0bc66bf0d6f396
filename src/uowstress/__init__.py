"""uowstress: stateful stress and property testing for Unit-of-Work persistence layers."""

from uowstress.errors import UowstressError

__all__ = ["UowstressError", "__version__"]

__version__ = "0.1.0"

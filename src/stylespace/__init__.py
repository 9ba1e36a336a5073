"""stylespace: learn a visual style space from a fashion catalog."""
__version__ = "0.1.0"

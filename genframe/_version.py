"""genframe's release, in a module of its own so that any layer can record it without importing the
package's public door (``genframe/__init__.py`` imports every layer)."""

__version__ = "0.2.0"

"""Core features written as ordinary plugins and registered like any other."""

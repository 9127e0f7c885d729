"""The ``dsaprune`` command line."""

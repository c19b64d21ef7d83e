"""Training package that reproduces the shipped QGAC weights (run as ``python -m training``)."""

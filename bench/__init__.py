"""The benchmark driver (`make bench`, `payments bench`) and its committed latest results."""

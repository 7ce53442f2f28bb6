"""Tests of rk; a package so that `tests.hosts` and `tests.kernels` import from the root."""

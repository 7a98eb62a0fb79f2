"""Depth study on CIFAR-10: the library behind the DVC stages in ``stages/``."""

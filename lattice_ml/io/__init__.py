"""Gauge-configuration formats (NERSC, ILDG/LIME, openQCD), HDF5 ensembles and checkpoints."""

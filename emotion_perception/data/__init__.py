"""Datasets (EMOTIC, HECO, CAER-S), the synthetic scene generator and training transforms."""

"""lattice_ml: machine-learning-assisted lattice field theory on the Python array API.

Layers (data flows one way, lower layers never import higher ones)::

    backend, lattice  ->  scalar (fields, actions)  ->  samplers  ->  stats  ->  cli

Every function takes and returns plain arrays (NumPy, CuPy, or any array-API namespace) in
documented layouts with the batch axis first.
"""

__version__ = "0.1.0"

"""Normalizing flows for lattice fields, with hand-written vector-Jacobian products.

Every layer maps ``(x, logJ) -> (y, logJ + log|det dy/dx|)`` on arrays with the batch axis first.
"""

"""The error of a configuration that cannot run: :class:`ConfigError`.

Its own module so that the schema's cross-key rules (:mod:`lattice_ml.cli.rules`), the loader
(:mod:`lattice_ml.cli.config`) and the job builders raise the same exception without importing
each other.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration problem; the message names the dotted key, the problem and the source.

    Attributes
    ----------
    key : str or None
        Dotted key (``"sampler.n_samples"``) or table (``"[samplr]"``) concerned, if any.
    problem : str
        What is wrong, without the key.
    source : str or None
        Where the offending value came from: a file name, ``"--set"`` or the embedded default.
    """

    def __init__(self, key: str | None, problem: str, source: str | None = None):
        self.key = key
        self.problem = problem
        self.source = source
        msg = f"{key}: {problem}" if key else problem
        if source:
            msg += f" (in {source})"
        super().__init__(msg)

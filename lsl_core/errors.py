"""One error family for everything a user can get wrong.

Every error names the problem *and* what to do about it, so the app can show the message as-is
and the CLI can print it without a traceback.
"""


class LSLError(ValueError):
    """Base class: a user-facing problem with input, configuration or environment."""


class AudioError(LSLError):
    """Audio that cannot be used: unreadable, empty, NaN, too long, wrong shape."""


class ManifestError(LSLError):
    """A checkpoint manifest that is malformed, points at missing files or mismatched widths."""


class ModelLoadError(LSLError):
    """A model that cannot be loaded (unknown hub id offline, missing weights, bad config)."""


class MetricInputError(LSLError):
    """Hidden states a metric cannot be computed on (empty span, NaN, too few pairs)."""


class DataError(LSLError):
    """A sample set that cannot be read (missing columns, bad CSV, missing audio files)."""

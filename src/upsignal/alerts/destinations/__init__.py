"""The built-in destinations. Each registers under the ``upsignal.destinations``
entry point group, as a third-party destination would."""

"""vrae_model: train, calibrate, export and explore a Variational Recurrent Auto-Encoder.

Importing the package stays cheap (no torch, no lightning) so the CLI starts fast; import the
sub-module you need.
"""

__version__ = "0.1.0"

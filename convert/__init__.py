"""mlxspec's converter: checkpoint layout readers and weight-name mapping.

Installed as the subpackage `mlxspec.convert` (see the package-dir mapping in pyproject.toml).
"""

from .mapping import mistral_to_hf_name, permute_half_to_interleaved, permute_interleaved_to_half

__all__ = ["mistral_to_hf_name", "permute_half_to_interleaved", "permute_interleaved_to_half"]

"""mlxspec's converter: checkpoint layout readers, weight-name mapping, the streaming
quantizing writer and Hub download.

Installed as the subpackage `mlxspec.convert` (see the package-dir mapping in
pyproject.toml). The subpackage is itself callable, so the Python API reads
`mlxspec.convert(src, out, bits=4, group_size=64)` while `mlxspec.convert.<module>`
imports keep working (a plain function of that name would shadow the package).
"""

import sys
import types

from .converter import convert


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        """See `mlxspec.convert.converter.convert`."""
        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["convert"]

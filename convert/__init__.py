"""mlxspec's converter, installed as the subpackage `mlxspec.convert`: checkpoint layout
readers (HF, Mistral, GGUF), the streaming quantizing writer and atomic output folders.

The Python API is the function `mlxspec.convert(src, out, ...)` (`converter.convert`);
import the modules here with `from mlxspec.convert import converter`.
"""

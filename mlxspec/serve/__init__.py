"""`mlxspec serve`: an OpenAI-compatible HTTP server (Starlette on uvicorn, the optional
extra `mlxspec[serve]`) in front of one session whose requests run in one continuous
batch, speculating inside it."""

from .engine import Closing, Engine, QueueFull

__all__ = ["Closing", "Engine", "QueueFull"]

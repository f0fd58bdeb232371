"""The engine: decoding (prefill and plain steps), the speculative loop, rejection
sampling, draft-length policies, the calibration that feeds them, and the session that
keeps what outlives one request."""

from .batch import Batch, Completion
from .batch_row import Row
from .calibrate import CalibrationWarning, calibrate
from .generate import generate, stream_generate
from .options import GenerationOptions
from .policy import AcceptanceEstimate, CostModel, DraftPolicy, FixedK, Heuristic, Plain, Timings, best_k
from .sampling import RandomKeys, SamplingParams
from .session import Calibration, Session
from .speculative import Generation
from .stats import GenerationStats, GenerationStep, SpeculativeStats
from .verify import draw, verify

__all__ = ["AcceptanceEstimate", "Batch", "Calibration", "CalibrationWarning", "Completion", "CostModel",
           "DraftPolicy", "FixedK", "Generation", "GenerationOptions", "GenerationStats", "GenerationStep",
           "Heuristic", "Plain", "RandomKeys", "Row", "SamplingParams", "Session", "SpeculativeStats", "Timings",
           "best_k", "calibrate", "draw", "generate", "stream_generate", "verify"]

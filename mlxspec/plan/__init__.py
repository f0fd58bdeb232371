"""`mlxspec plan`: what a run takes in memory, read from configs and headers alone, against
what the device allows, with a speed projection; and the fit check that the commands loading a
model run first."""

from .fit import check_fit
from .named import Named, plan_named, projection, read_named
from .request import FitRequest
from .verdict import Plan, make_plan

__all__ = ["FitRequest", "Named", "Plan", "check_fit", "make_plan", "plan_named", "projection", "read_named"]

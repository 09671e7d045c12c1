"""The scenario contract and what a scenario needs to build its benchmark: the door for scenario authors."""

from clbench.scenario.assembly import Benchmark, BuildContext, Part, assemble, cap, subsample, vocabulary
from clbench.scenario.contract import Scenario, register

__all__ = ["Benchmark", "BuildContext", "Part", "Scenario", "assemble", "cap", "register", "subsample", "vocabulary"]

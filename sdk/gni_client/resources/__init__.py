"""The client's resources, each in a sync and an async flavour."""

from gni_client.resources.artifacts import Artifacts, AsyncArtifacts
from gni_client.resources.experiments import AsyncExperiments, Experiments
from gni_client.resources.runs import AsyncRuns, Runs

__all__ = ["Artifacts", "AsyncArtifacts", "AsyncExperiments", "AsyncRuns", "Experiments", "Runs"]

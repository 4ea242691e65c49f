"""The embedded LMS simulator: a deterministic world, its HTTP app and a loopback server."""

from lms_pipeline.simulator.app import SimulatorApp
from lms_pipeline.simulator.server import serve_in_thread
from lms_pipeline.simulator.world import World, WorldSpec

__all__ = ["SimulatorApp", "World", "WorldSpec", "serve_in_thread"]

"""What every provider's simulator shares: the deterministic world (``world.py``), the loopback WSGI server and its
router (``server.py``), and the injected faults, request log and added latency (``common.py``). Each provider's
own app is in its folder (``providers/<name>/simulator.py``); ``systems.py`` assembles them for a connections file."""

from lms_pipeline.simulator.server import serve_in_thread
from lms_pipeline.simulator.world import World, WorldSpec

__all__ = ["World", "WorldSpec", "serve_in_thread"]

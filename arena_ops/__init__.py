"""Arena Flywheel: post-train LLMs with a simulated chatbot arena."""

from __future__ import annotations

__version__ = "0.1.0"

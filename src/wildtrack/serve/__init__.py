"""The laptop web service: FastAPI app, JSON API and the drag-and-drop page (see :mod:`wildtrack.serve.app`)."""

from wildtrack.serve.app import app_from_env, create_app, run_server

__all__ = ["app_from_env", "create_app", "run_server"]

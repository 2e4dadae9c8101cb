"""The HTTP feature server (FastAPI/uvicorn), imported only by ``featurekit serve``.

See :func:`featurekit.serving.app.create_app`.
"""

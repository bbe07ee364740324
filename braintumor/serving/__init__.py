"""The HTTP service: a Ray Serve application that scores one uploaded slice per request.

- ``app``: the FastAPI ingress deployment, `build_app` for `serve run`, `start_service` for jobs/serve.py.
- ``config``: the service's settings and the checks on its model folders.
- ``uploads``: reading and checking a request body; every rejection is an `UploadError` with a 4xx status.
- ``rendering``: the mask and overlay PNGs.
- ``loadtest`` and ``benchmark``: the load test client and the benchmark behind docs/BENCHMARKS.md.
"""

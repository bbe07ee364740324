"""The Ray Serve application: a FastAPI ingress that scores one uploaded slice per request.

Routes:
    POST /predict   one slice (multipart field `file`, or the raw body) -> JSON with the tumour
                    probability, label, area, the mask (or with `?overlay=true` an overlay) as
                    base64 PNG, model versions and timings. Bad requests get a 4xx JSON error.
    GET  /health    {"status": "ok"} once the models are loaded.
    GET  /version   package, model and Ray versions and the batching settings.
    GET  /          a page to pick or drop a slice and see the overlay.

Each replica loads the segmenter and the classifier once. Model calls run one at a time on a
dedicated thread, so the event loop keeps reading and checking requests in the meantime. With
batching, requests that arrive together share one model call through `@serve.batch`.

Start it with `python jobs/serve.py` (local Ray on 127.0.0.1), or on a running cluster with
`serve run braintumor.serving.app:build_app segmenter=PATH classifier=PATH max_replicas=4`.
"""

import asyncio
import logging
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve
from ray.serve import Application
from starlette.exceptions import HTTPException

import braintumor
from braintumor.data.io import SLICE_SHAPE
from braintumor.preprocessing.normalization import NORMALIZATION
from braintumor.serving.config import ServiceConfig
from braintumor.serving.rendering import mask_png, overlay_png, to_base64
from braintumor.serving.uploads import UploadError, decode_upload, read_upload

logger = logging.getLogger(__name__)

APP_NAME = "braintumor"
SLICE_PIXELS = SLICE_SHAPE[0] * SLICE_SHAPE[1]

# A slice alone has no patient volume. The models were trained on slice-zscore-v1, whose
# statistics come from each slice alone, so a served slice is normalised exactly as in training.
NORMALIZATION_NOTE = {
    "scheme": NORMALIZATION,
    "statistics_from": "this slice alone",
    "same_as_training": True,
    "description": (
        "Each channel is scaled to [0, 1] and standardised with this slice's own mean and standard "
        "deviation (floored at 0.05). Training normalised every slice the same way, without patient "
        "volume statistics, so a single slice gets exactly the normalisation the models were trained on."
    ),
}

# The FastAPI app is serialised when the deployment class below is decorated, so everything its
# routes use must be defined above the class.

# Rejected requests are logged the first few times per error code, then every REJECTION_LOG_EVERY-th.
REJECTION_LOG_FIRST = 10
REJECTION_LOG_EVERY = 100

api = FastAPI(
    title="braintumor",
    version=braintumor.__version__,
    description="Find and outline lower-grade glioma in one brain MRI slice. Not for clinical use.",
)


@api.exception_handler(RequestValidationError)
async def _invalid_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())
    return JSONResponse({"error": "invalid_parameter", "message": problems}, status_code=422)


@api.exception_handler(HTTPException)
async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = f"{request.method} {request.url.path}: {error.detail}"
    return JSONResponse({"error": codes.get(error.status_code, "http_error"), "message": message}, status_code=error.status_code)


@api.exception_handler(Exception)
async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    # Starlette re-raises the error after this response, so Serve logs it with its traceback.
    message = f"{request.method} {request.url.path} failed ({type(error).__name__}); the replica log has the traceback"
    return JSONResponse({"error": "internal_error", "message": message}, status_code=500)


def _milliseconds(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass
class SliceScore:
    """The model outputs for one slice and how long it took to get them."""

    probability: float
    label: int
    mask: np.ndarray  # (256, 256) bool
    area: int
    batch_size: int
    queue_seconds: float  # from the end of decoding to the start of the model call: batch wait and model thread wait
    model_seconds: float


@serve.deployment(name="SliceService")
@serve.ingress(api)
class SliceService:
    """One replica: both models, loaded once, behind the HTTP routes."""

    def __init__(self, config: ServiceConfig):
        from braintumor.inference import SlicePredictor
        from braintumor.runtime import setup_logging

        setup_logging()
        self.config = config
        started = time.perf_counter()
        self.predictor = SlicePredictor(config.segmenter, config.classifier)
        self.model_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.page_html = resources.files("braintumor.serving").joinpath("page.html").read_text(encoding="utf-8")
        self.rejections = Counter()

        self._score_batch.set_max_batch_size(config.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(config.batch_wait_ms / 1000)
        self._warm_up()
        logger.info(
            "replica ready in %.1f s: segmenter %s, classifier %s, batching %s (max %d slices, %.0f ms wait)",
            time.perf_counter() - started,
            config.segmenter,
            config.classifier or "none",
            "on" if config.batching else "off",
            config.max_batch_size,
            config.batch_wait_ms,
        )

    def _warm_up(self) -> None:
        """Trace the models' predict functions for one slice and a full batch, so the first requests are not slow."""
        sizes = {1, self.config.max_batch_size} if self.config.batching else {1}
        for size in sorted(sizes):
            self.predictor.predict(np.zeros((size, *SLICE_SHAPE), dtype=np.uint8))

    @api.post("/predict")
    async def predict(
        self,
        request: Request,
        overlay: bool = Query(False, description="return the mask drawn on the FLAIR channel (overlay_png) instead of the mask (mask_png)"),
        filename: str | None = Query(None, description="name to report for a raw-body upload"),
    ) -> JSONResponse:
        """Score one slice sent as multipart field `file` or as the raw request body."""
        started = time.perf_counter()
        try:
            upload = await read_upload(request, self.config.max_body_bytes, filename)
            decoded = decode_upload(upload)
        except UploadError as error:
            self._log_rejection(error)
            return JSONResponse(error.to_json(), status_code=error.status)
        decoded_at = time.perf_counter()

        if self.config.batching:
            score = await self._score_batch((decoded.image, decoded_at))
        else:
            [score] = await self._run_models([(decoded.image, decoded_at)])
        scored_at = time.perf_counter()
        if overlay:
            image_field, image_png = "overlay_png", overlay_png(decoded.image, score.mask)
        else:
            image_field, image_png = "mask_png", mask_png(score.mask)
        finished = time.perf_counter()

        return JSONResponse(
            {
                "filename": decoded.filename,
                "format": decoded.format,
                "probability": round(score.probability, 6),
                "label": score.label,
                "label_name": "tumour" if score.label else "no tumour",
                "threshold": self.predictor.decision_info.threshold,
                "probability_from": "classifier" if self.predictor.classifier is not None else "segmenter (highest pixel probability)",
                "tumour_area_pixels": score.area,
                "tumour_area_fraction": round(score.area / SLICE_PIXELS, 6),
                image_field: to_base64(image_png),
                "normalization": NORMALIZATION_NOTE,
                "models": self._model_descriptions(),
                "batch_size": score.batch_size,
                "timings_ms": {
                    "read_and_decode": _milliseconds(decoded_at - started),
                    "queue": _milliseconds(score.queue_seconds),
                    "model": _milliseconds(score.model_seconds),
                    "encode": _milliseconds(finished - scored_at),
                    "total": _milliseconds(finished - started),
                },
            }
        )

    @api.get("/health")
    async def health(self) -> dict:
        return {"status": "ok", "replica": serve.get_replica_context().replica_id.unique_id}

    @api.get("/version")
    async def version(self) -> dict:
        import ray

        return {
            "service": APP_NAME,
            "version": braintumor.__version__,
            "models": self._model_descriptions(),
            "normalization": NORMALIZATION,
            "ray": ray.__version__,
            "batching": {
                "enabled": self.config.batching,
                "max_batch_size": self.config.max_batch_size,
                "batch_wait_ms": self.config.batch_wait_ms,
            },
            "max_body_bytes": self.config.max_body_bytes,
        }

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(self.page_html)

    # NOTE: Ray Serve 2.60 forms the next batch while the previous one is still running, because
    # max_concurrent_batches limits running batches, not forming them. Under load, batches therefore
    # stay small unless batch_wait_ms is about as long as one model call.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # both reset from the config in __init__
    async def _score_batch(self, items: list[tuple[np.ndarray, float]]) -> list[SliceScore]:
        return await self._run_models(items)

    async def _run_models(self, items: list[tuple[np.ndarray, float]]) -> list[SliceScore]:
        """Score (slice, time it was decoded) pairs in one model call on the model thread."""
        images = np.stack([image for image, _ in items])
        loop = asyncio.get_running_loop()
        predictions, model_started, model_seconds = await loop.run_in_executor(self.model_executor, self._timed_predict, images)
        return [
            SliceScore(
                probability=float(predictions.probability[i]),
                label=int(predictions.label[i]),
                mask=predictions.masks[i],
                area=int(predictions.area[i]),
                batch_size=len(items),
                queue_seconds=model_started - decoded_at,
                model_seconds=model_seconds,
            )
            for i, (_, decoded_at) in enumerate(items)
        ]

    def _timed_predict(self, images: np.ndarray):
        started = time.perf_counter()
        predictions = self.predictor.predict(images)
        return predictions, started, time.perf_counter() - started

    def _model_descriptions(self) -> dict:
        descriptions = {}
        for role, info in (("segmenter", self.predictor.segmenter_info), ("classifier", self.predictor.classifier_info)):
            if info is not None:
                descriptions[role] = {"version": info.version, "architecture": info.architecture, "threshold": info.threshold}
        return descriptions

    def _log_rejection(self, error: UploadError) -> None:
        self.rejections[error.code] += 1
        count = self.rejections[error.code]
        if count <= REJECTION_LOG_FIRST or count % REJECTION_LOG_EVERY == 0:
            logger.warning("rejected request (%s, %d so far): %s", error.code, count, error.message)



def build_app(args: ServiceConfig) -> Application:
    """Build the application from settings; the target of `serve run braintumor.serving.app:build_app`.

    Args:
        args: a ServiceConfig, or a dict of its fields (what `serve run ... key=value` passes).

    Raises:
        FileNotFoundError, ModelLoadError: a model folder is missing or contains the wrong model.
        pydantic.ValidationError: a setting is invalid.
    """
    config = args if isinstance(args, ServiceConfig) else ServiceConfig.model_validate(args)
    config = config.resolved()
    return SliceService.options(**deployment_options(config)).bind(config)


def deployment_options(config: ServiceConfig) -> dict:
    """Return the Serve deployment options: a fixed replica count, or autoscaling when max_replicas exceeds replicas."""
    options = {
        "max_ongoing_requests": config.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": config.cpus_per_replica},
    }
    if config.autoscaling:
        target = config.target_ongoing_requests or (config.max_batch_size if config.batching else 2)
        options["autoscaling_config"] = {
            "min_replicas": config.replicas,
            "max_replicas": config.max_replicas,
            "target_ongoing_requests": target,
        }
    else:
        options["num_replicas"] = config.replicas
    return options


def start_service(config: ServiceConfig, host: str = "127.0.0.1", port: int = 8000, ray_address: str | None = None) -> str:
    """Start Ray (local on 127.0.0.1 unless `ray_address` or $RAY_ADDRESS names a cluster) and Serve, deploy the app.

    Returns:
        The service's base URL. Serve keeps running after this returns; stop it with `serve.shutdown()`.

    Raises:
        OSError: `port` is already in use on `host` (checked for a local Ray instance only).
    """
    import os

    from braintumor.runtime import init_ray

    application = build_app(config)  # checks the model folders before anything starts
    local = not (ray_address or os.environ.get("RAY_ADDRESS"))
    if local:
        check_port_free(host, port)
    init_ray(ray_address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(application, name=APP_NAME, route_prefix="/")
    url = f"http://{host}:{port}"
    logger.info("serving %s at %s", APP_NAME, url)
    return url


def check_port_free(host: str, port: int) -> None:
    """Raise OSError with the fix when nothing can listen on host:port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port} ({error.strerror}); pass another --port") from None

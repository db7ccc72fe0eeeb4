"""The app's state: the engine (once built and loaded), its executor, its metrics and its admission control.

Made by `create_app` and kept on `app.state.riposte`; routes reach it through `server.api.deps`.
"""

from __future__ import annotations

import gc
import logging
from concurrent.futures import ThreadPoolExecutor

from server.admission import Admission, AdmissionConfig
from server.api.tokens import TokenCounter
from server.engine import Engine
from server.metrics import Metrics
from server.models import BuildStatus, ensure_models, load_engine
from server.settings import Settings

log = logging.getLogger(__name__)


class State:
    """The app's engine (once loaded or built), its executor, its metrics and its admission control."""

    def __init__(self, settings: Settings, engine: Engine | None, metrics: Metrics):
        self.settings = settings
        self.engine = engine
        self.owns_engine = engine is None
        self.load_error: str | None = None
        self.building: BuildStatus | None = None
        self._tokens: TokenCounter | None = None
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=settings.cpu_workers, thread_name_prefix="riposte-turn")
        self.admission = Admission(
            AdmissionConfig(max_in_flight=settings.max_in_flight, min_scored=settings.min_scored),
            lambda: None if self.engine is None else self.engine.seconds_per_candidate,
        )

    @property
    def tokens(self) -> TokenCounter:
        """Counts tokens in the loaded editor's tokenizer (for `usage` and `max_tokens`)."""
        if self._tokens is None:
            self._tokens = TokenCounter(self.engine)
        return self._tokens

    def load(self) -> None:
        """Build what the model dir lacks (when allowed), then load the engine; runs on a background thread."""
        settings = self.settings
        try:
            status = BuildStatus()
            self.building = status
            config = settings.engine_config()  # once: it reads the blocklist file
            ensure_models(settings.model_dir, build=settings.build, status=status, rules=config)
            self.building = None
            engine = load_engine(settings.model_dir, config,
                                 require_reranker=settings.require_reranker)
        except Exception as exc:  # reported by /health; the process stays up to say so
            log.exception("could not load the models from %s", settings.model_dir)
            self.building = None
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        if engine.editor is None:
            log.warning("no reranker or editor in %s: replies are ranked by the first stage or the prior", settings.model_dir)
        # The models are hundreds of thousands of long-lived objects; freezing them keeps the garbage
        # collector's full passes (triggered by each request's short-lived candidate strings) from walking
        # them all, which showed as 100-200 ms stalls in the latency tail under load.
        gc.collect()
        gc.freeze()
        self.engine = engine
        log.info("models loaded from %s; personas: %s", settings.model_dir, ", ".join(engine.persona_names))

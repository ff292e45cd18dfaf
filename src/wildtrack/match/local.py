"""Local-feature verification: RootSIFT keypoints matched under a geometric model, counted as inliers.

Global CNN embeddings see "a loggerhead on a reef"; what tells two loggerheads apart is the scute pattern of the
head and flippers. Keypoints on those scutes that match *and* agree on one geometric transform are strong
evidence for the same individual, and almost never happen by chance between two different turtles. Matching is
far too slow for a whole catalogue, so it re-ranks the global search's shortlist: a query costs one extraction
plus K pair matches, with the gallery side read from an on-disk :class:`FeatureCache`.

OpenCV releases the GIL in SIFT, the matcher and RANSAC, so plain threads use every core.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import platformdirs
from PIL import Image
from threadpoolctl import threadpool_limits

from wildtrack.evaluate import rank_gallery
from wildtrack.images import DEFAULT_MAX_PIXELS, ImageError, open_image
from wildtrack.locate import TurtleLocator
from wildtrack.progress import announce_total

if TYPE_CHECKING:
    from wildtrack.match.fusion import ScoreFusion

__all__ = [
    "DescriptorProjection",
    "FeatureCache",
    "LocalFeatures",
    "LocalReranker",
    "MatchResult",
    "SiftExtractor",
    "local_scores_for_shortlist",
    "match_pair",
    "root_sift",
]

GeometricModel = Literal["homography", "affine", "fundamental"]
Focus = Literal["frame", "turtle"]
TURTLE_DECODE_FACTOR = 2.5  # decode side ÷ max_side when focusing on the turtle (2000 px photos: full size)
Source = str | Path | bytes


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints of one image in a frame whose longer side is ``frame_side`` px, and their RootSIFT descriptors.

    ``xy`` is ``(N, 2)`` float32 in that common frame whatever size the JPEG was draft-decoded at, so pixel
    thresholds mean the same for every pair; ``xy * scale + offset`` is the point in the original image (the
    frame is the whole photo, or the turtle's square with ``focus="turtle"``).
    """

    xy: np.ndarray
    descriptors: np.ndarray  # (N, 128) float32, RootSIFT (unit L2 norm); (N, d) once projected, still unit norm
    frame_side: int
    scale: float
    offset: tuple[float, float] = (0.0, 0.0)  # original pixels of the frame's corner (a turtle crop's origin)

    def __len__(self) -> int:
        return len(self.xy)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman 2012): L1-normalise then square-root, so Euclidean distance between
    the results compares histograms by the Hellinger kernel, which is less dominated by a few large bins."""
    d = np.asarray(descriptors, dtype=np.float32)
    d = d / np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(d, out=d)


@dataclass(frozen=True, eq=False)
class DescriptorProjection:
    """RootSIFT projected on its ``dims`` principal components (fitted on a catalogue's own descriptors) and
    re-normalised to unit length.

    Matching is dominated by one ``(N, d) @ (d, M)`` product per pair, so 64 dims instead of 128 make a pair
    about 1.5× cheaper: on the real sample 150 projected matches took what 100 full ones did, and the re-ranked
    results were no worse (``docs/accuracy.md``), so the default shortlist grew from 100 to 150 at the same cost.
    """

    mean: np.ndarray  # (128,)
    basis: np.ndarray  # (128, dims), orthonormal columns

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        basis = np.asarray(self.basis, dtype=np.float32)
        if mean.shape != (128,) or basis.ndim != 2 or basis.shape[0] != 128 or not 1 <= basis.shape[1] <= 128:
            raise ValueError(f"a RootSIFT projection needs a (128,) mean and a (128, d) basis, got {mean.shape} "
                             f"and {basis.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(basis).all()):
            raise ValueError("a RootSIFT projection must be finite")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "basis", np.ascontiguousarray(basis))

    @property
    def dims(self) -> int:
        return int(self.basis.shape[1])

    @classmethod
    def fit(cls, descriptors: np.ndarray, dims: int = 64) -> DescriptorProjection:
        """Principal components of ``(N, 128)`` RootSIFT descriptors; needs at least ``2 × dims`` of them."""
        x = np.asarray(descriptors, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 128:
            raise ValueError(f"expected (N, 128) RootSIFT descriptors, got {x.shape}")
        if not 1 <= dims <= 128:
            raise ValueError(f"dims must be in 1..128, got {dims}")
        if len(x) < 2 * dims:
            raise ValueError(f"fitting {dims} components needs at least {2 * dims} descriptors, got {len(x)}")
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        return cls(mean, vt[:dims].T)

    def __call__(self, features: LocalFeatures) -> LocalFeatures:
        y = (features.descriptors - self.mean) @ self.basis
        y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-7)
        return replace(features, descriptors=y.astype(np.float32, copy=False))

    def to_dict(self) -> dict[str, Any]:
        """For ``fusion.json``: the exact float32 values, little-endian and base64-encoded (as JSON lists the
        basis alone would take 8,000 lines)."""
        return {"dims": self.dims, "dtype": "<f4",
                "mean": base64.b64encode(self.mean.astype("<f4").tobytes()).decode("ascii"),
                "basis": base64.b64encode(self.basis.astype("<f4").tobytes()).decode("ascii")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DescriptorProjection:
        try:
            dims = int(data["dims"])
            mean = np.frombuffer(base64.b64decode(data["mean"]), dtype="<f4")
            basis = np.frombuffer(base64.b64decode(data["basis"]), dtype="<f4")
            return cls(mean, basis.reshape(128, dims))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a RootSIFT projection document ({exc})") from exc


def _shrink(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    ratio = max_side / max(w, h)
    return img.resize((max(1, round(w * ratio)), max(1, round(h * ratio))), Image.Resampling.BILINEAR,
                      reducing_gap=2.0)


def _decode_grey(source: Source, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, float]:
    """Upright grey image whose longer side is at most ``max_side``, and the factor back to the original size.

    Decoding asks for the aspect-correct draft (a square target would force a full decode of a 3:2 photo), and
    grey drafting skips the colour conversion.
    """
    img = open_image(source, max_pixels=max_pixels, max_side=max_side, grey=True)
    original = img.info.get("original_max_side", max(img.size))
    img = _shrink(img, max_side)
    return np.asarray(img, dtype=np.uint8), original / max(img.size)


def _decode_turtle_grey(source: Source, max_side: int, locator: TurtleLocator,
                        max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, float, tuple[float, float]]:
    """The turtle's square (or the whole photo when no turtle is found) as grey, longer side at most
    ``max_side``; the factor and offset back to the original's pixels.

    The photo is decoded at ``TURTLE_DECODE_FACTOR × max_side`` so that a turtle filling half the frame still
    reaches ``max_side`` px of its own.
    """
    img = open_image(source, max_pixels=max_pixels, max_side=TURTLE_DECODE_FACTOR * max_side)
    to_original = img.info.get("original_max_side", max(img.size)) / max(img.size)
    crop, (left, top) = locator.crop(img)
    side = max(crop.size)
    crop = _shrink(crop.convert("L"), max_side)
    return np.asarray(crop, dtype=np.uint8), to_original * side / max(crop.size), (left * to_original,
                                                                                    top * to_original)


@dataclass(frozen=True)
class SiftExtractor:
    """SIFT on a grey image with its longer side at ``max_side`` px, keeping the ``max_keypoints`` strongest.

    ``contrast_threshold`` is half OpenCV's default, so low-contrast underwater photos still yield the full
    ``max_keypoints`` (at 0.04 many gave < 1000 and lost true matches). ``clahe`` equalises local contrast
    first; on the real photos it found no more true matches and costs 50 % more time, so it is off by default.
    ``focus="turtle"`` (default) extracts from the turtle's square found by
    :class:`~wildtrack.locate.TurtleLocator` at up to ``max_side`` px of its own, instead of from the whole
    frame: more keypoints on the scutes, fewer on sand and light patterns (whole-gallery matching on the real
    sample: Recall@1 0.43 → 0.53, ``docs/accuracy.md``). ``"frame"`` is the whole photo, as before.
    Every field goes into the cache key, so changing one never serves stale features.
    """

    max_side: int = 800
    max_keypoints: int = 1500
    contrast_threshold: float = 0.02
    clahe: bool = False
    focus: Focus = "turtle"

    def __post_init__(self) -> None:
        if self.focus not in ("frame", "turtle"):
            raise ValueError(f"focus must be 'frame' or 'turtle', got {self.focus!r}")

    def key(self) -> str:
        fields = ",".join(f"{k}={v}" for k, v in sorted(asdict(self).items()))
        locator = f",{_turtle_locator().key()}" if self.focus == "turtle" else ""
        return f"sift-v1[{fields}{locator}]"

    def grey(self, source: Source) -> tuple[np.ndarray, float, tuple[float, float]]:
        """The grey frame SIFT runs on, and the factor and offset back to the original's pixels."""
        if self.focus == "turtle":
            grey, scale, offset = _decode_turtle_grey(source, self.max_side, _turtle_locator())
        else:
            (grey, scale), offset = _decode_grey(source, self.max_side), (0.0, 0.0)
        if self.clahe:
            grey = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(grey)
        return grey, scale, offset

    def raw(self, source: Source) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
        """``(xy, uint8 SIFT descriptors, scale, offset)``: OpenCV's SIFT values are integers in 0..255, so
        uint8 is lossless and 4× smaller in the cache than float32."""
        grey, scale, offset = self.grey(source)
        sift = cv2.SIFT_create(nfeatures=self.max_keypoints, contrastThreshold=self.contrast_threshold)
        keypoints, desc = sift.detectAndCompute(grey, None)
        if desc is None or not keypoints:
            return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), scale, offset
        xy = np.asarray([kp.pt for kp in keypoints], dtype=np.float32)
        # nfeatures may keep a few more on response ties; keep the strongest exactly.
        if len(xy) > self.max_keypoints:
            keep = np.argsort([-kp.response for kp in keypoints], kind="stable")[: self.max_keypoints]
            xy, desc = xy[keep], desc[keep]
        return xy, np.clip(np.rint(desc), 0, 255).astype(np.uint8), scale, offset

    def __call__(self, source: Source) -> LocalFeatures:
        xy, desc, scale, offset = self.raw(source)
        return LocalFeatures(xy, root_sift(desc), self.max_side, scale, offset)


@lru_cache(maxsize=1)
def _turtle_locator() -> TurtleLocator:
    """One locator per process: its network is built once and shared by every extractor thread."""
    return TurtleLocator()


def _cache_root(cache_dir: str | Path | None) -> Path:
    root = Path(cache_dir or os.environ.get("WILDTRACK_CACHE_DIR") or platformdirs.user_cache_dir("wildtrack"))
    return root / "local_features"


class FeatureCache:
    """Per-image features on disk (one ``.npz`` each) plus a bounded in-memory LRU in front of it
    (``memory_items`` × ~0.8 MB at the default 1500 keypoints, half that when projected).

    The file name is a hash of the absolute path, mtime, size and the extractor's parameters, so an edited photo
    or a changed setting is simply a miss; files are written atomically, so concurrent threads or processes can
    share a cache. ``hits``/``misses`` count lookups (a miss means one extraction). The disk holds the
    extractor's raw SIFT; a ``projection`` is applied as features are loaded, so every projection shares them.
    """

    def __init__(self, extractor: SiftExtractor | None = None, cache_dir: str | Path | None = None,
                 memory_items: int = 256, projection: DescriptorProjection | None = None):
        self.extractor = extractor or SiftExtractor()
        self.root = _cache_root(cache_dir)
        self.memory_items = memory_items
        self._projection = projection
        self._memory: OrderedDict[str, LocalFeatures] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def key(self, path: str | Path) -> str:
        p = Path(path).resolve()
        st = p.stat()
        text = f"{p}\0{st.st_mtime_ns}\0{st.st_size}\0{self.extractor.key()}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def file_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def _remember(self, key: str, feats: LocalFeatures) -> None:
        with self._lock:
            self._memory[key] = feats
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)

    def _read(self, file: Path) -> LocalFeatures | None:
        try:
            with np.load(file) as z:
                xy, desc, scale = z["xy"], z["desc"], float(z["scale"])
                offset = (float(z["offset"][0]), float(z["offset"][1])) if "offset" in z else (0.0, 0.0)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            return None  # missing or half-written by a crashed run: extract again
        return self._features(xy, desc, scale, offset)

    @property
    def projection(self) -> DescriptorProjection | None:
        """Fixed for the cache's life (its memory holds projected features): use :meth:`with_projection`."""
        return self._projection

    def _features(self, xy: np.ndarray, desc: np.ndarray, scale: float, offset: tuple[float, float]
                  ) -> LocalFeatures:
        feats = LocalFeatures(xy, root_sift(desc), self.extractor.max_side, scale, offset)
        return self.projection(feats) if self.projection is not None else feats

    def with_projection(self, projection: DescriptorProjection | None) -> FeatureCache:
        """The same extractor and disk cache, loading features through ``projection``."""
        return FeatureCache(self.extractor, self.root.parent, self.memory_items, projection)

    def get(self, source: Source) -> LocalFeatures:
        """Features of a file (cached) or of uploaded bytes (extracted, never cached: they have no stable key)."""
        if isinstance(source, bytes):
            return self._features(*self.extractor.raw(source))
        try:
            key = self.key(source)
        except OSError as exc:
            raise ImageError(f"{source}: cannot open ({exc.strerror or exc})") from exc
        with self._lock:
            feats = self._memory.get(key)
            if feats is not None:
                self._memory.move_to_end(key)
                self.hits += 1
                return feats
        file = self.file_for(key)
        feats = self._read(file)
        if feats is not None:
            with self._lock:
                self.hits += 1
            self._remember(key, feats)
            return feats
        xy, desc, scale, offset = self.extractor.raw(source)
        with self._lock:
            self.misses += 1
        tmp = file.with_name(f".{file.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, xy=xy, desc=desc, scale=np.float32(scale), offset=np.asarray(offset, np.float32))
            os.replace(tmp, file)
        except OSError:
            tmp.unlink(missing_ok=True)  # a read-only cache still works, it just never warms up
        feats = self._features(xy, desc, scale, offset)
        self._remember(key, feats)
        return feats

    def get_many(self, sources: Sequence[Source], workers: int | None = None,
                 progress: Callable[[int], None] | None = None) -> list[LocalFeatures]:
        """Features of many images, extracted in parallel threads; order follows ``sources``. ``progress`` is
        advanced once per image as it is read or extracted."""

        def get(source: Source) -> LocalFeatures:
            feats = self.get(source)
            if progress:
                progress(1)
            return feats

        with ThreadPoolExecutor(_workers(workers)) as pool:
            return list(pool.map(get, sources))


# ----------------------------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class MatchResult:
    """``matches``: correspondences passing the ratio test; ``inliers``: those consistent with one geometry."""

    inliers: int
    matches: int


_MIN_POINTS = {"homography": 4, "affine": 3, "fundamental": 8}


def _two_nn(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact nearest and second-nearest ``b`` row for every ``a`` row, with the two Euclidean distances.

    RootSIFT rows have unit L2 norm, so ``|x - y|² = 2 - 2 x·y`` and one BLAS product finds the same neighbours
    as ``cv2.BFMatcher(NORM_L2).knnMatch(k=2)`` about 7× faster (BFMatcher does not use BLAS).
    """
    dots = a @ b.T
    rows = np.arange(len(a))
    first = dots.argmax(axis=1)
    best = dots[rows, first]
    dots[rows, first] = -np.inf
    second = dots.max(axis=1)
    return first, np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0)), np.sqrt(np.maximum(2.0 - 2.0 * second, 0.0))


def _putative_matches(a: np.ndarray, b: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Lowe's ratio test on exact 2-NN, then one match per ``b`` keypoint (its closest), so a repeated texture
    cannot vote many times for the same point."""
    first, d1, d2 = _two_nn(a, b)
    query = np.flatnonzero(d1 < ratio * d2)
    if len(query) == 0:
        return query, query
    order = query[np.argsort(d1[query], kind="stable")]
    _, keep = np.unique(first[order], return_index=True)
    query = np.sort(order[keep])
    return query, first[query]


def match_pair(
    a: LocalFeatures,
    b: LocalFeatures,
    ratio: float = 0.8,
    model: GeometricModel = "affine",
    threshold: float = 8.0,
) -> MatchResult:
    """Putative matches (ratio test) and how many of them one geometric model explains.

    ``affine`` (default) fits a 4-DoF similarity (rotation, scale, shift; ``estimateAffinePartial2D`` with
    RANSAC), ``homography`` an 8-DoF plane (USAC MAGSAC++) and ``fundamental`` an epipolar geometry (MAGSAC++),
    each with a ``threshold``-px error in the common frame. On the real photos the similarity won: a head seen
    from the side is near-planar and near-fronto-parallel, and fewer degrees of freedom leave chance matches
    between different turtles at ≤ 4 inliers in 99 % of pairs (homography: 6, fundamental: 12), so weak true
    matches stand out (see ``scripts/bench_rerank.py``).
    """
    if model not in _MIN_POINTS:
        raise ValueError(f"unknown geometric model {model!r}; choose homography, affine or fundamental")
    if len(a) < 2 or len(b) < 2:
        return MatchResult(0, 0)
    qi, ti = _putative_matches(a.descriptors, b.descriptors, ratio)
    n = len(qi)
    if n < _MIN_POINTS[model]:
        return MatchResult(0, n)
    src = a.xy[qi].reshape(-1, 1, 2)
    dst = b.xy[ti].reshape(-1, 1, 2)
    try:
        if model == "homography":
            _, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, threshold, maxIters=2000, confidence=0.999)
        elif model == "affine":
            _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold,
                                                  maxIters=2000, confidence=0.999)
        else:
            _, mask = cv2.findFundamentalMat(src, dst, cv2.USAC_MAGSAC, threshold / 2, 0.999, 2000)
    except cv2.error:
        return MatchResult(0, n)  # degenerate sample (e.g. all points on a line): no model, no inliers
    inliers = int(mask.sum()) if mask is not None else 0
    return MatchResult(inliers, n)


# ----------------------------------------------------------------------------------------------- re-ranking


def _one_blas_thread() -> threadpool_limits:
    """Pairs are matched in parallel threads; OpenBLAS threads inside each small product only contend with them
    (measured: 3× slower per pair with OpenBLAS' default threads)."""
    return threadpool_limits(limits=1, user_api="blas")


def _workers(workers: int | None) -> int:
    return max(1, workers or os.cpu_count() or 1)


class LocalReranker:
    """Geometric verification of a global search's shortlist.

    Only the first ``k`` shortlist entries are matched and re-ordered: by the fused score of a fitted
    :class:`~wildtrack.match.fusion.ScoreFusion` when one is given, else by inliers then global score. Entries
    beyond ``k`` keep their order after them (with 0 inliers), so verification never promotes an image the
    global search ranked lower than ``k``.
    """

    def __init__(self, k: int = 20, cache: FeatureCache | None = None, workers: int | None = None,
                 ratio: float = 0.8, model: GeometricModel = "affine", threshold: float = 8.0,
                 fusion: ScoreFusion | None = None):
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k
        self.cache = cache or FeatureCache()
        self.workers = _workers(workers)
        self.ratio, self.model, self.threshold = ratio, model, threshold
        self.fusion = fusion

    def with_projection(self, projection: DescriptorProjection | None) -> LocalReranker:
        """The same matching settings and disk cache, comparing descriptors through ``projection``."""
        return LocalReranker(self.k, self.cache.with_projection(projection), self.workers, self.ratio, self.model,
                             self.threshold, self.fusion)

    def match(self, a: LocalFeatures, b: LocalFeatures) -> MatchResult:
        return match_pair(a, b, self.ratio, self.model, self.threshold)

    def match_many(self, query: LocalFeatures, gallery: Sequence[LocalFeatures]) -> list[MatchResult]:
        """One query against many gallery images, in parallel threads."""
        with _one_blas_thread(), ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(lambda g: self.match(query, g), gallery))

    def inliers(self, query: Source, gallery_paths: Sequence[str | Path]) -> np.ndarray:
        """Inlier counts of one query against each gallery image (one extraction, ``len(gallery_paths)`` matches)."""
        q = self.cache.get(query)
        gallery = self.cache.get_many(list(gallery_paths), self.workers)
        return np.asarray([m.inliers for m in self.match_many(q, gallery)], dtype=np.int64)

    def rerank(self, query: Source, shortlist: Sequence[tuple[str | Path, float]]
               ) -> list[tuple[str | Path, float, int]]:
        """``shortlist`` is ``(gallery_path, global_score)`` best first; returns ``(path, global_score, inliers)``."""
        head, tail = list(shortlist[: self.k]), list(shortlist[self.k:])
        counts = self.inliers(query, [p for p, _ in head]) if head else np.zeros(0, np.int64)
        scored = [(p, float(s), int(c)) for (p, s), c in zip(head, counts, strict=True)]
        if self.fusion is not None:
            fused = self.fusion.logit(np.array([s for _, s, _ in scored]), counts)
            order = np.argsort(-fused, kind="stable")
        else:
            order = np.lexsort((-np.array([s for _, s, _ in scored]), -counts)) if scored else []
        return [scored[i] for i in order] + [(p, float(s), 0) for p, s in tail]


def local_scores_for_shortlist(
    query_paths: Sequence[str | Path],
    gallery_paths: Sequence[str | Path],
    sim: np.ndarray,
    k: int,
    reranker: LocalReranker | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(Q, G) inlier counts for each query's top-``k`` gallery images by ``sim``; 0 outside the shortlist.

    For evaluation: features of every image involved are extracted (or read from the cache) once, then all
    pairs are matched in a thread pool. ``k >= G`` matches every pair (local matching alone). ``progress`` is
    advanced once per photo whose features are read and once per query matched, after announcing that total
    (:mod:`wildtrack.progress`): on a cold cache the extraction is most of the time.
    """
    sim = np.asarray(sim)
    if sim.shape != (len(query_paths), len(gallery_paths)):
        raise ValueError(f"sim shape {sim.shape} does not match {len(query_paths)} × {len(gallery_paths)}")
    reranker = reranker or LocalReranker(k=k)
    k = min(k, len(gallery_paths))
    top = rank_gallery(sim)[:, :k]
    needed_g = sorted(set(top.ravel().tolist()))
    announce_total(progress, 2 * len(query_paths) + len(needed_g))
    feats_q = reranker.cache.get_many(query_paths, reranker.workers, progress)
    feats_g = dict(zip(needed_g, reranker.cache.get_many([gallery_paths[j] for j in needed_g], reranker.workers,
                                                         progress), strict=True))
    out = np.zeros(sim.shape, dtype=np.int64)

    def row(i: int) -> None:
        for j in top[i]:
            out[i, j] = reranker.match(feats_q[i], feats_g[int(j)]).inliers
        if progress:
            progress(1)

    with _one_blas_thread(), ThreadPoolExecutor(reranker.workers) as pool:
        list(pool.map(row, range(len(query_paths))))
    return out

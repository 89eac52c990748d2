"""Video fidelity metrics of a decoded (TEST) video against its source (REF), per frame and mean.

- L1: mean absolute difference of the RGB values scaled to [0, 1].
- PSNR: 10 log10(255^2 / MSE) in dB over the RGB values; identical frames would be infinite, so the MSE is
  floored at 255^2 * 1e-10 (PSNR capped at 100 dB) to keep means and JSON finite.
- SSIM: Wang et al. 2004 as usually reported: Gaussian window sigma 1.5, K1 0.01, K2 0.03, population
  covariance, averaged over the three channels (scikit-image's implementation).
- LPIPS (alex): codec.encoder.losses.make_lpips. Offline its AlexNet backbone is a seeded random one; the
  result says which (`notes`), since only the ImageNet backbone gives the published calibration.
- identity similarity: cosine of ArcFace IR-SE50 embeddings (pSp/e4e's identity network and crop) when the
  official weights are installed; otherwise skipped with the reason. A seeded stand-in would only measure
  noise, so it is never reported as this metric.
- identity distance (dlib): Euclidean distance of dlib's 128-d face descriptors (the ResNet shipped offline in
  face-recognition-models; dlib calls two faces the same person below 0.6). A real network available here, so
  an identity measure exists without ArcFace; frames where either picture shows no detectable face are left
  out (NaN per frame) and counted in the notes.
- FID / FVD: need the Inception-v3 (FID) and I3D (FVD) weights, which are not available here: skipped with the
  reason.

Regions (`stv-eval --region face|background`): L1, PSNR and SSIM (its map's mean) over the pixels of one region
of each frame, given as a boolean mask per frame; a frame whose mask is empty gives NaN (left out of the mean).
LPIPS and the identity measures are whole-picture measures and are skipped for a region.

Frames are streamed in batches: memory does not grow with the video's length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch
from skimage.metrics import structural_similarity

from codec import zoo
from codec.errors import InputError, ModelError

PSNR_CAP_DB = 100.0
IDENTITY_MODEL = "arcface_ir_se50"
SKIPPED_ALWAYS = {
    "fid": "needs the Inception-v3 FID weights (pt_inception-2015-12-05), which are not available offline",
    "fvd": "needs the I3D Kinetics-400 weights used by FVD, which are not available offline",
}


@dataclass
class EvalResult:
    per_frame: dict[str, list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    frames: int = 0

    @property
    def means(self) -> dict[str, float]:
        """Mean of each metric over the frames where it is defined (NaN marks a frame left out)."""
        return {name: float(np.nanmean(values)) for name, values in self.per_frame.items()
                if values and not np.isnan(values).all()}


def l1(ref: np.ndarray, test: np.ndarray) -> float:
    return float(np.abs(ref.astype(np.float64) - test).mean() / 255.0)


def psnr(ref: np.ndarray, test: np.ndarray) -> float:
    mse = max(float(((ref.astype(np.float64) - test) ** 2).mean()), 255.0**2 * 10 ** (-PSNR_CAP_DB / 10))
    return 10.0 * math.log10(255.0**2 / mse)


def ssim(ref: np.ndarray, test: np.ndarray) -> float:
    # the Gaussian window spans 11x11 pixels (3.5 sigma each side); smaller frames need an odd window that fits
    side = min(ref.shape[:2])
    win = None if side >= 11 else max(3, (side - 1) // 2 * 2 + 1)
    return float(structural_similarity(ref, test, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, win_size=win))


def region_metrics(ref: np.ndarray, test: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
    """L1, PSNR and SSIM of a frame pair, over the whole picture (mask None) or over the True pixels of `mask`."""
    if mask is None:
        return {"l1": l1(ref, test), "psnr": psnr(ref, test), "ssim": ssim(ref, test)}
    if not mask.any():
        return {"l1": float("nan"), "psnr": float("nan"), "ssim": float("nan")}
    a, b = ref[mask], test[mask]
    side = min(ref.shape[:2])
    win = None if side >= 11 else max(3, (side - 1) // 2 * 2 + 1)
    _, ssim_map = structural_similarity(ref, test, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, win_size=win, full=True)
    return {"l1": l1(a, b), "psnr": psnr(a, b), "ssim": float(ssim_map[mask].mean())}


def to_tensor(frames: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 frames -> [B, 3, H, W] float in [-1, 1]."""
    batch = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float()
    return batch / 127.5 - 1.0


def identity_network(device: torch.device) -> tuple[torch.nn.Module | None, str]:
    """(ArcFace IR-SE50 with its official weights, '') or (None, why it is not available)."""
    from codec.models.arcface import load_arcface

    try:
        file = zoo.path(IDENTITY_MODEL)
        zoo.verify(IDENTITY_MODEL, file)
    except ModelError as exc:
        return None, f"official ArcFace IR-SE50 weights not installed ({exc})"
    return load_arcface(file).to(device), ""


class DlibIdentity:
    """Distance between the faces of two pictures by dlib's face descriptor (see the module doc)."""

    DETECT_MAX_SIDE = 640  # detect on a copy at most this large (HOG cost grows with area), fit on the original

    def __init__(self) -> None:
        from codec.preprocess.landmarks import _dlib_models, model_path

        self.dlib, self.detector, self.predictor = _dlib_models()
        self.net = self.dlib.face_recognition_model_v1(str(model_path("dlib_face_recognition_resnet_model_v1.dat")))

    def descriptor(self, image: np.ndarray) -> np.ndarray | None:
        """128-d descriptor of the largest face in an RGB uint8 picture, None when no face is found."""
        scale = min(1.0, self.DETECT_MAX_SIDE / max(image.shape[:2]))
        small = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes = self.detector(small, 1)  # one 2x upsampling: finds faces down to ~40 px
        if not boxes:
            return None
        box = max(boxes, key=lambda b: b.area())
        box = self.dlib.rectangle(*(int(round(v / scale)) for v in (box.left(), box.top(), box.right(), box.bottom())))
        shape = self.predictor(image, box)
        return np.array(self.net.compute_face_descriptor(image, shape))

    def distance(self, ref: np.ndarray, test: np.ndarray) -> float:
        a, b = self.descriptor(ref), self.descriptor(test)
        return float("nan") if a is None or b is None else float(np.linalg.norm(a - b))


class Evaluator:
    """Per-frame metrics of batches of (reference, test) frames; accumulates an EvalResult."""

    def __init__(self, device: torch.device | str = "cpu", lpips: bool = True, identity: bool = True,
                 dlib_identity: bool = True, region: Callable[[int, tuple[int, int]], np.ndarray] | None = None,
                 region_name: str = "all"):
        """`region(frame index, (height, width))` -> that frame's bool mask, for figures over one region only
        (LPIPS and the identity measures are then skipped: they judge whole pictures)."""
        self.device = torch.device(device)
        self.result = EvalResult(skipped=dict(SKIPPED_ALWAYS))
        self.region = region
        for name in ("l1", "psnr", "ssim"):
            self.result.per_frame[name] = []
        off = {"lpips": "disabled (--no-lpips)", "identity": "disabled (--no-identity)"}
        if region is not None:
            whole_picture = f"a whole-picture measure (--region {region_name} gives L1, PSNR and SSIM only)"
            off = {"lpips": whole_picture, "identity": whole_picture}
            lpips = identity = dlib_identity = False
            self.result.notes["region"] = f"{region_name}: L1, PSNR and SSIM over that region's pixels of each frame"
        self.lpips = None
        if lpips:
            from codec.encoder.losses import backbone_available, make_lpips

            self.lpips = make_lpips(self.device)
            self.result.per_frame["lpips"] = []
            self.result.notes["lpips"] = ("alex, ImageNet backbone" if backbone_available() else
                                          "alex with a SEEDED RANDOM backbone (ImageNet AlexNet weights not "
                                          "installed): comparable between runs here, not with published LPIPS")
        else:
            self.result.skipped["lpips"] = off["lpips"]
        self.identity, why = identity_network(self.device) if identity else (None, off["identity"])
        if self.identity is None:
            self.result.skipped["identity_similarity"] = why
        else:
            self.result.per_frame["identity_similarity"] = []
            self.result.notes["identity_similarity"] = "cosine of ArcFace IR-SE50 embeddings (official weights)"
        self.dlib = DlibIdentity() if dlib_identity else None
        if self.dlib is None:
            self.result.skipped["identity_distance_dlib"] = off["identity"]
        else:
            self.result.per_frame["identity_distance_dlib"] = []

    def finish(self) -> EvalResult:
        """The result, with the dlib identity's face count noted (or the metric skipped if no frame had faces)."""
        values = self.result.per_frame.get("identity_distance_dlib")
        if values is not None:
            found = int(np.sum(~np.isnan(values)))
            if values and found == 0:
                del self.result.per_frame["identity_distance_dlib"]
                self.result.skipped["identity_distance_dlib"] = "dlib's detector found no face pair in any frame"
            else:
                self.result.notes["identity_distance_dlib"] = (
                    f"dlib face descriptor distance (< 0.6: same person); faces found in {found} of "
                    f"{len(values)} frame pairs")
        return self.result

    @torch.no_grad()
    def add(self, refs: list[np.ndarray], tests: list[np.ndarray]) -> None:
        r = self.result.per_frame
        for ref, test in zip(refs, tests, strict=True):
            mask = None if self.region is None else self.region(len(r["l1"]), ref.shape[:2])
            for name, value in region_metrics(ref, test, mask).items():
                r[name].append(value)
            if self.dlib is not None:
                r["identity_distance_dlib"].append(self.dlib.distance(ref, test))
        if self.lpips is not None or self.identity is not None:
            a, b = to_tensor(refs, self.device), to_tensor(tests, self.device)
            if self.lpips is not None:
                from codec.encoder.losses import lpips_distance

                r["lpips"] += lpips_distance(self.lpips, a, b).cpu().tolist()
            if self.identity is not None:
                r["identity_similarity"] += self.identity.identity_similarity(a, b).cpu().tolist()
        self.result.frames += len(refs)


def paired_batches(refs: Iterable[np.ndarray], tests: Iterable[np.ndarray], batch: int,
                   counts: list[int]) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Pairs of equally sized frames, `batch` at a time, up to the shorter video; at the end `counts` receives
    how many frames each video had (both are read to the end, so a length mismatch is known)."""
    ref_it, test_it = iter(refs), iter(tests)
    n = [0, 0]
    pending: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    while True:
        a, b = next(ref_it, None), next(test_it, None)
        n[0] += a is not None
        n[1] += b is not None
        if a is None or b is None:
            break
        if a.shape != b.shape:
            raise InputError(f"frame sizes differ: reference {a.shape[1]}x{a.shape[0]}, test {b.shape[1]}x"
                             f"{b.shape[0]} (decode with --size {a.shape[1]}x{a.shape[0]})")
        pending[0].append(a)
        pending[1].append(b)
        if len(pending[0]) == batch:
            yield pending
            pending = ([], [])
    if pending[0]:
        yield pending
    counts += [n[0] + sum(1 for _ in ref_it), n[1] + sum(1 for _ in test_it)]

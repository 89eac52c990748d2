"""Make the PCA basis of a generator's W space that the compact ID latent (format 1.3, `idpc`) codes in.

    python tools/make_latent_basis.py [--model tiny] [--samples 20000] [--seed 0] [--out weights/tiny-64-latent-basis.safetensors]

W = mapping(z) for seeded z ~ N(0, I); the basis is the eigenvectors of W's covariance (binary64), largest first,
their signs fixed (each column's largest entry positive) so the file does not depend on the eigen solver's
choice; log_scales = round(4 log2 of each component's standard deviation). The file is made once and shipped: a
decoder uses its numbers by digest and never recomputes them (another CPU would give other last bits). Prints the
sha256 to put in weights/manifest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import zoo  # noqa: E402


def sample_w(generator, samples: int, seed: int, batch: int = 2000) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, samples, batch):
            z = torch.randn(min(batch, samples - start), generator.style_dim, generator=gen)
            out.append(generator.mapping(z).double().numpy())
    return np.concatenate(out)


def pca_basis(w: np.ndarray) -> dict[str, np.ndarray]:
    mean = w.mean(axis=0)
    covariance = np.cov(w - mean, rowvar=False)
    variances, vectors = np.linalg.eigh(covariance)
    order = np.argsort(variances)[::-1]
    variances, vectors = np.clip(variances[order], 1e-30, None), vectors[:, order]
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    vectors = vectors * signs
    return {"mean": mean.astype(np.float32), "components": vectors.astype(np.float32),
            "log_scales": np.rint(4 * np.log2(np.sqrt(variances))).astype(np.int32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("weights/tiny-64-latent-basis.safetensors"))
    args = parser.parse_args()
    generator = zoo.load_generator(args.model)
    tensors = pca_basis(sample_w(generator, args.samples, args.seed))
    save_file(tensors, str(args.out), metadata={"made_by": "tools/make_latent_basis.py", "model": args.model,
                                                 "samples": str(args.samples), "seed": str(args.seed)})
    data = args.out.read_bytes()
    print(f"{args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()

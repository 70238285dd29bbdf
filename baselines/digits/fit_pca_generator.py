"""Fit the bundled digits-pca-gaussian generator: `python -m baselines.digits.fit_pca_generator` (seconds).

PCA (16 components, SVD of the centred training digits; every 10th image held out as for DigitsNet),
then per class the mean and the Cholesky factor of the covariance of its PCA coordinates (plus 1e-3 on
the diagonal). Closed form, so deterministic.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from safetensors.numpy import save_file

from harness.datasets.digits import held_out_mask, load_digits_arrays
from baselines.digits.pca_generator import WEIGHTS_PATH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--out", default=str(WEIGHTS_PATH))
    args = parser.parse_args()
    values, labels = load_digits_arrays()
    train = ~held_out_mask(len(labels))
    x, y = values[train].reshape(int(train.sum()), -1), labels[train]
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:args.components]
    z = (x - mean) @ components.T
    class_mean = np.stack([z[y == c].mean(axis=0) for c in range(10)])
    eye = np.eye(args.components)
    class_chol = np.stack([np.linalg.cholesky(np.cov(z[y == c], rowvar=False) + 1e-3 * eye) for c in range(10)])
    tensors = {"pca_mean": mean, "components": components, "class_mean": class_mean, "class_chol": class_chol}
    metadata = {"components": str(args.components), "data": "sklearn load_digits, every 10th image held out"}
    save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()}, args.out, metadata=metadata)
    print(json.dumps(metadata))


if __name__ == "__main__":
    main()

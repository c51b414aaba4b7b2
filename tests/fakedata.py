"""Small datasets in the exact on-disk formats the tasks read (MNIST IDX files, an aclImdb tree or a review CSV,
torch_geometric's qm9_v3.pt), written by the tests: no test needs a download."""

import csv
import random
import struct

import pytest
import torch


# --- MNIST -----------------------------------------------------------------------------------------------

def write_idx(path, data: torch.Tensor) -> None:
    """IDX as in the MNIST distribution: magic (0, 0, uint8 type 0x08, number of dims), big-endian sizes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, data.dim()))
        f.write(struct.pack(f">{data.dim()}I", *data.shape))
        f.write(data.to(torch.uint8).numpy().tobytes())


def synthetic_mnist(root, n_train=600, n_test=400, seed=0):
    """Digits drawn as a bright 6x6 square whose place depends on the label, over noise: learnable, not trivial."""
    g = torch.Generator().manual_seed(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=g)
        images = torch.randint(0, 90, (n, 28, 28), generator=g)
        for i, c in enumerate(labels.tolist()):
            r, k = 2 + (c // 5) * 13, 1 + (c % 5) * 5
            images[i, r:r + 6, k:k + 6] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


# --- IMDb ------------------------------------------------------------------------------------------------

POSITIVE = ["great", "wonderful", "superb", "moving", "brilliant"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "dull"]
NEUTRAL = ["movie", "film", "plot", "actor", "scene", "story", "director", "music", "ending", "camera", "script",
           "cast", "year", "time", "character", "dialogue"]


def review(rng, positive):
    """A dozen neutral words, stop words and markup around two words that carry the sentiment."""
    body = [rng.choice(NEUTRAL) for _ in range(12)] + ["the", "was", "<br", "/>", "10/10"]
    body += [rng.choice(POSITIVE if positive else NEGATIVE) for _ in range(2)]
    rng.shuffle(body)
    return " ".join(body).capitalize() + "!"


def write_archive(root, n_per_label=60, seed=0):
    rng = random.Random(seed)
    for folder, positive in (("pos", True), ("neg", False)):
        path = root / "aclImdb" / "train" / folder
        path.mkdir(parents=True)
        for i in range(n_per_label):
            (path / f"{i}_{rng.randint(1, 10)}.txt").write_text(review(rng, positive))
    return root


def write_csv(path, n=120, seed=1):
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(n):
            positive = i % 3 != 0  # unbalanced on purpose: the split must still stratify
            w.writerow([review(rng, positive), "positive" if positive else "negative"])
    return path


# --- QM9 -------------------------------------------------------------------------------------------------

try:  # with rdkit, torch_geometric reads the raw SDF files instead of qm9_v3.pt
    import rdkit  # noqa: F401

    HAS_RDKIT = True
except ImportError:
    HAS_RDKIT = False
needs_preprocessed = pytest.mark.skipif(HAS_RDKIT, reason="rdkit installed: QM9 would want the raw SDF files")

ATOM_ALPHA = torch.tensor([0.7, 2.0, 1.5, 1.0, 0.5])  # H C N O F: the target is a sum over atoms, learnable


def molecules(n=60, seed=0):
    """Dicts as in qm9_v3.pt: x (atoms x 11: one-hot type, atomic number, aromatic, sp, sp2, sp3, H count),
    edge_index (both directions), edge_attr (one-hot bond type), y (1 x 19), z, pos, name, idx."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        atoms = int(torch.randint(2, 9, (1,), generator=g))
        kind = torch.randint(0, 5, (atoms,), generator=g)
        z = torch.tensor([1, 6, 7, 8, 9])[kind]
        x = torch.zeros(atoms, 11)
        x[torch.arange(atoms), kind] = 1
        x[:, 5] = z.float()
        rows = list(range(1, atoms))
        parents = [int(torch.randint(0, r, (1,), generator=g)) for r in rows]  # a random tree
        edge_index = torch.tensor([rows + parents, parents + rows])
        bond = torch.randint(0, 4, (len(rows),), generator=g).repeat(2)
        y = torch.zeros(1, 19)
        y[0, 1] = ATOM_ALPHA[kind].sum()
        y[0, 0] = float(atoms)
        out.append({"x": x, "edge_index": edge_index, "edge_attr": torch.eye(4)[bond], "y": y, "z": z,
                    "pos": torch.randn(atoms, 3, generator=g), "name": f"gdb_{i + 1}", "idx": torch.tensor([i])})
    return out


def write_qm9(root, n=80):
    raw = root / "QM9" / "raw"
    raw.mkdir(parents=True)
    torch.save(molecules(n), raw / "qm9_v3.pt")
    return root

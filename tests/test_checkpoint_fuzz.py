"""1,000 seeded mutations of a real checkpoint: each gives CheckpointError or loads intact, never another error.

Mutations: truncations, flipped bits, random bytes (also behind zip and pickle headers), shuffled, removed and
duplicated zip members, and members whose bytes are damaged and then re-zipped with valid CRCs (so the
damage reaches torch's unpickler and dawnet's structure checks instead of the CRC check).
"""

from __future__ import annotations

import collections
import io
import random
import warnings
import zipfile

import pytest
import torch

import dawnet
from dawnet.checkpoint import CheckpointError, load_checkpoint
from toy import toy_mlp

MUTATIONS = ("truncate", "flip", "random", "random_after_zip_header", "random_after_pickle_header", "shuffle",
             "remove", "duplicate", "damage_member", "random_member")
CONTENT_KEPT = ("flip", "shuffle", "remove", "duplicate")  # these cannot change what a load returns


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    torch.manual_seed(0)
    model = toy_mlp(hidden=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    agent = dawnet.Agent(model, optimizer, loss=torch.nn.CrossEntropyLoss(), metrics=["accuracy"], device="cpu",
                         schedule=torch.optim.lr_scheduler.StepLR(optimizer, 2))
    x, y = torch.rand(8, 1, 12, 12), torch.randint(0, 4, (8,))
    agent.fit([(x, y)], steps=2, progress=False)
    path = agent.save(tmp_path_factory.mktemp("fuzz") / "agent.pt")
    return path.read_bytes()


def rezip(data: bytes, edit) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = [(info, z.read(info.filename)) for info in z.infolist()]
    members = edit(members)
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        warnings.simplefilter("ignore")  # duplicated members are the point of one mutation
        for info, content in members:
            z.writestr(info, content)
    return out.getvalue()


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "flip":
        b = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == "random":
        return rng.randbytes(rng.randint(1, 4096))
    if kind == "random_after_zip_header":
        return data[:30] + rng.randbytes(rng.randint(1, 4096))
    if kind == "random_after_pickle_header":
        return b"\x80\x02" + rng.randbytes(rng.randint(1, 512))
    if kind == "shuffle":
        return rezip(data, lambda m: rng.sample(m, len(m)))
    if kind == "remove":
        return rezip(data, lambda m: [x for i, x in enumerate(m) if i != rng.randrange(len(m))])
    if kind == "duplicate":
        return rezip(data, lambda m: m + [rng.choice(m)])

    def damage(members):
        i = rng.randrange(len(members))
        info, content = members[i]
        if kind == "random_member":
            content = rng.randbytes(rng.randint(0, 2 * len(content) + 8))
        else:
            b = bytearray(content)
            for _ in range(rng.randint(1, 4)):
                if b:
                    b[rng.randrange(len(b))] = rng.randrange(256)
            content = bytes(b)
        return members[:i] + [(info, content)] + members[i + 1:]

    return rezip(data, damage)


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


@pytest.mark.slow
def test_a_thousand_mutations_give_checkpoint_errors(original, tmp_path):
    reference = load_checkpoint(io.BytesIO(original))
    rng = random.Random(20261208)
    outcomes: collections.Counter = collections.Counter()
    path = tmp_path / "mutated.pt"
    for i in range(1000):
        kind = MUTATIONS[i % len(MUTATIONS)]
        blob = mutate(original, kind, rng)
        path.write_bytes(blob)
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            assert "\n" not in str(e) and str(path) in str(e), (kind, i, str(e))
            outcomes[kind, "refused by load_checkpoint"] += 1
            continue
        if kind in CONTENT_KEPT:  # CRCs and the zip directory guard the content: it loads whole or not at all
            assert same(state, reference), (kind, i)
        try:
            dawnet.Agent.load(path, map_location="cpu", restore_rng=False)
        except CheckpointError as e:
            assert "\n" not in str(e), (kind, i, str(e))
            outcomes[kind, "refused by Agent.load"] += 1
        else:
            outcomes[kind, "loaded"] += 1
    refused = sum(n for (_, how), n in outcomes.items() if how.startswith("refused"))
    assert refused >= 600, outcomes  # most mutations really damage the file
    assert outcomes["random", "refused by load_checkpoint"] == 100
    assert outcomes["truncate", "refused by load_checkpoint"] == 100

"""Checkpoint files (lattice_ml.io.checkpoint): exact round trips, atomic writes, corruption
detection, and training stopped and resumed from a checkpoint equal to uninterrupted training."""

from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, asarray, backend_name, namespace, to_numpy
from lattice_ml.io.checkpoint import (
    MAGIC,
    CheckpointError,
    load_checkpoint,
    load_training_checkpoint,
    save_checkpoint,
    save_training_checkpoint,
)


def tree(xp):
    rng = np.random.default_rng(7)
    return {
        "field": asarray(rng.standard_normal((2, 4, 4)), xp),                # array-API array
        "links": rng.standard_normal((2, 2, 3, 3)) + 1j * rng.standard_normal((2, 2, 3, 3)),
        "f32": rng.standard_normal(5).astype(np.float32),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "strided": np.arange(12.0).reshape(3, 4).T,                             # not contiguous
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 3)),
        "scalars": [np.float32(1.5), np.int64(-3), np.complex64(1 - 2j), np.float64(np.pi)],
        "python": {"int": 2**70, "float": 0.1, "tiny": 5e-324, "nan": float("nan"),
                   "inf": float("-inf"), "text": "φ⁴ \"quoted\"", "none": None, "flag": True},
        "shape": (8, 8), "nested": {"tuple": (1, [2, (3.0,)]), "list": []},
    }


def same(a, b):
    """Exact equality, containers and dtypes included (NaN equals NaN)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


def test_round_trip_is_exact(tmp_path, xp):
    state = tree(xp)
    n = save_checkpoint(tmp_path / "c.ckpt", state, kind="test")
    assert n == os.path.getsize(tmp_path / "c.ckpt")
    ck = load_checkpoint(tmp_path / "c.ckpt", kind="test")
    assert ck.kind == "test" and ck.format_version == 1 and ck.versions["lattice_ml"]
    expected = dict(state, field=to_numpy(state["field"]),
                    big_endian=state["big_endian"].astype("<i4"))
    same(ck.state, expected)
    assert ck.state["big_endian"].dtype.str == "<i4"  # stored little-endian, same values
    assert ck.state["field"].flags.writeable
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_layout_header_and_alignment(tmp_path):
    save_checkpoint(tmp_path / "c", {"a": np.arange(3.0), "b": np.ones(5, np.int8),
                                     "c": np.arange(4.0)})
    raw = (tmp_path / "c").read_bytes()
    magic, version, reserved, h, p, digest = struct.unpack("<8sIIQQ32s", raw[:64])
    assert magic == MAGIC and version == 1 and reserved == 0
    assert h % 64 == 0 and len(raw) == 64 + h + p
    assert digest == hashlib.sha256(raw[:32] + raw[64:]).digest()
    import json
    header = json.loads(raw[64:64 + h])
    offsets = [e["offset"] for e in header["arrays"]]
    assert all(o % 64 == 0 for o in offsets)
    c = header["arrays"][2]
    start = 64 + h + c["offset"]
    np.testing.assert_array_equal(np.frombuffer(raw[start:start + c["nbytes"]], "<f8"),
                                  np.arange(4.0))


def test_unstorable_values_are_refused_before_writing(tmp_path):
    target = tmp_path / "c"
    for bad, where in (({"f": lambda: 0}, "state['f']"), ({1: 2}, "key 1"),
                       ({"a": [np.array(["x"])]}, "state['a'][0]"),
                       ({"__array__": 0}, "reserved"), ({"o": np.array([None])}, "dtype object")):
        with pytest.raises(CheckpointError, match=__import__("re").escape(where)):
            save_checkpoint(target, bad)
    assert not os.listdir(tmp_path)


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c"
    save_checkpoint(path, {"k": 1})
    before = path.read_bytes()

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"k": 2, "a": np.ones(100)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c"]


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "c.ckpt"
    save_checkpoint(path, {"field": np.linspace(0, 1, 300), "step": 12}, kind="run")
    return path


def test_truncated_and_padded_files_are_refused(good):
    raw = good.read_bytes()
    for cut, words in ((len(raw) - 1, "truncated"), (len(raw) // 2, "truncated"),
                       (40, "truncated"), (0, "truncated")):
        good.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match=words) as info:
            load_checkpoint(good)
        assert str(good) in str(info.value)
    good.write_bytes(raw + b"\0")
    with pytest.raises(CheckpointError, match="1 bytes after the end"):
        load_checkpoint(good)


def test_every_flipped_byte_is_detected(good):
    """A flipped bit anywhere (preamble, header or payload) is refused with a message naming the
    problem; sampled positions cover every region of the file."""
    raw = bytearray(good.read_bytes())
    positions = sorted(set(range(0, 64)) | set(range(64, len(raw), 37)) | {len(raw) - 1})
    for pos in positions:
        bad = bytearray(raw)
        bad[pos] ^= 0x10
        good.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(good)
        msg = str(info.value)
        assert any(w in msg for w in ("SHA-256 mismatch", "magic", "format version",
                                      "truncated", "after the end")), (pos, msg)
    good.write_bytes(bytes(raw))
    assert load_checkpoint(good).state["step"] == 12


def test_other_files_kind_and_missing(tmp_path, good):
    other = tmp_path / "x.npz"
    np.savez(other, a=np.ones(3))
    with pytest.raises(CheckpointError, match="not a lattice-ml checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="'run' checkpoint, not a 'training'"):
        load_checkpoint(good, kind="training")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(tmp_path)
    raw = bytearray(good.read_bytes())
    raw[8:12] = struct.pack("<I", 2)
    good.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="format version 2"):
        load_checkpoint(good)


# --------------------------------------------------------------------------------------------
# training: stout-network weights with Adam (docs/training.md, tiny and stochastic)
# --------------------------------------------------------------------------------------------

def _training(xp, n_steps, *, start=None, stop=None, path=None, restore=("optimizer", "rng")):
    """Fit two anisotropic stout layers so that the smeared plaquette of fresh rough SU(2)
    fields, drawn from ``rng`` at every step, reaches a target. Returns (theta, losses)."""
    from lattice_ml.gauge import GaugeAction
    from lattice_ml.gauge.observables import average_plaquette
    from lattice_ml.groups import random_near_identity
    from lattice_ml.optim import Adam
    from lattice_ml.smearing import StoutSmearing

    rng = RandomStreams(seed=2, n_chains=2, xp=xp)
    net = StoutSmearing(2, "plaquette", D=2, directions="anisotropic", rho=0.02)
    opt = Adam(lr=0.02)
    wilson = GaugeAction(1.0, 2, "wilson")
    theta, losses, step0 = asarray(net.parameters(), xp), [], 0
    if start is not None:
        rng = RandomStreams(seed=99, n_chains=2, xp=xp)  # overwritten by the checkpoint
        got = load_training_checkpoint(path, optimizer=opt if "optimizer" in restore else None,
                                       rng=rng if "rng" in restore else None)
        step0, losses = got["step"], list(got["history"]["loss"])
        theta = asarray(got["parameters"]["theta"], xp)
    for step in range(step0, n_steps):
        U = random_near_identity(rng, (2, 4, 4), 2, 0.9)
        net.set_parameters(theta)
        smeared = net.forward(U)
        P = float(xp.mean(average_plaquette(smeared)))
        losses.append((P - 0.9) ** 2)
        force = (-2.0 * (P - 0.9) / (U.shape[0] * 16)) * wilson.force(smeared)
        _, grad = net.backward(force)
        theta = opt.step(theta, grad)
        if stop is not None and step + 1 == stop:
            save_training_checkpoint(path, step=step + 1, parameters={"theta": theta},
                                     optimizer=opt, rng=rng, history={"loss": losses})
            return theta, losses
    return theta, losses


def test_training_resumed_from_checkpoint_is_bit_identical(tmp_path, xp_cpu):
    xp = xp_cpu
    path = tmp_path / "train.ckpt"
    theta_ref, loss_ref = _training(xp, 8)
    _training(xp, 8, stop=3, path=path)
    theta, losses = _training(xp, 8, start=True, path=path)
    assert namespace(theta) is namespace(theta_ref)
    np.testing.assert_array_equal(to_numpy(theta), to_numpy(theta_ref))
    assert losses == loss_ref and len(losses) == 8
    assert loss_ref[-1] < loss_ref[0]  # it trains
    # the test can fail: without the saved optimiser moments or random streams it differs
    for restore in (("rng",), ("optimizer",)) if backend_name(xp) == "numpy" else ():
        theta_bad, _ = _training(xp, 8, start=True, path=path, restore=restore)
        assert not np.array_equal(to_numpy(theta_bad), to_numpy(theta_ref))


class _Model:
    """A model with the state_dict protocol (as the flows have)."""

    def __init__(self, w):
        self.w = w

    def state_dict(self):
        return {"w": self.w.copy(), "layers": (1, 2)}

    def load_state_dict(self, state):
        assert state["layers"] == (1, 2)
        self.w = state["w"]


def test_training_checkpoint_model_protocols_and_errors(tmp_path):
    from lattice_ml.optim import SGD
    from lattice_ml.smearing import StoutSmearing

    path = tmp_path / "t.ckpt"
    net = StoutSmearing(1, "plaquette", D=2, rho=np.array([0.125]))
    save_training_checkpoint(path, step=4, model=net, history={"loss": [1.0, 0.5]},
                             extra={"lr": 0.1})
    net2 = StoutSmearing(1, "plaquette", D=2, rho=0.0)
    got = load_training_checkpoint(path, model=net2)
    assert got == {"step": 4, "parameters": None, "history": {"loss": [1.0, 0.5]},
                   "extra": {"lr": 0.1}}
    np.testing.assert_array_equal(net2.parameters(), [0.125])

    m = _Model(np.arange(3.0))
    save_training_checkpoint(path, step=1, model=m, rng=RandomStreams(1, 3))
    m2 = _Model(np.zeros(3))
    load_training_checkpoint(path, model=m2)
    np.testing.assert_array_equal(m2.w, np.arange(3.0))
    with pytest.raises(CheckpointError, match="holds no optimizer"):
        load_training_checkpoint(path, optimizer=SGD(0.1))
    with pytest.raises(CheckpointError, match="does not fit.*3 chains"):
        load_training_checkpoint(path, rng=RandomStreams(1, 2))
    with pytest.raises(CheckpointError, match="step"):
        save_training_checkpoint(path, step=-1)
    save_checkpoint(path, {"a": 1}, kind="run")
    with pytest.raises(CheckpointError, match="not a 'training' checkpoint"):
        load_training_checkpoint(path)


def test_flow_training_resumed_through_a_checkpoint_file_is_bit_identical(tmp_path, xp_cpu):
    """The flow trainer (state_dict protocol) saved with save_training_checkpoint after 3 of 6
    reverse-KL steps and restored into a fresh trainer continues bit for bit."""
    from lattice_ml.flows import FlowTrainer, make_phi4_flow
    from lattice_ml.lattice import Lattice
    from lattice_ml.optim import Adam, flatten
    from lattice_ml.scalar import Phi4Action

    xp = xp_cpu
    action = Phi4Action(Lattice((4, 4)), "standard", m2=0.5, lam=0.5)

    def trainer(seed=4):
        flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(4,), seed=3, final_scale=0.3)
        return FlowTrainer(flow, action, Adam(3e-2), batch_size=8, seed=seed)

    ref = trainer()
    ref.train(6)
    first = trainer()
    first.train(3)
    path = tmp_path / "flow.ckpt"
    save_training_checkpoint(path, step=first.step_count, model=first)
    resumed = trainer(seed=99)  # streams, parameters and moments all come from the file
    assert load_training_checkpoint(path, model=resumed)["step"] == 3
    resumed.train(3)
    assert list(resumed.history) == list(ref.history)
    for k in ref.history:
        if k != "time":  # wall time per step
            assert np.array_equal(resumed.history[k], ref.history[k], equal_nan=True), k
    a, b = ref.flow.params_to_host(), resumed.flow.params_to_host()
    for x, y in zip(flatten(a)[1], flatten(b)[1]):
        np.testing.assert_array_equal(x, y)

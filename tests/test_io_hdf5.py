"""HDF5 ensembles: configurations, histories and metadata in one appendable file, read back into
arrays; uncommitted appends ignored; corrupted chunks and foreign files rejected."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from io_reference import random_links

from lattice_ml.backend import RandomStreams
from lattice_ml.io import Ensemble, GaugeFileError, inspect_gauge, read_gauge, write_gauge

SHAPE = (4, 4, 2, 2)


def _plaquette_loop(U0) -> float:
    """<Re Tr U_p>/N of one configuration [D, *sites, N, N] by a loop over sites (reference)."""
    D = U0.shape[0]
    sites = U0.shape[1:1 + D]
    N = U0.shape[-1]
    total, count = 0.0, 0
    for x in np.ndindex(*sites):
        for mu in range(D):
            for nu in range(mu + 1, D):
                xm = list(x)
                xm[mu] = (xm[mu] + 1) % sites[mu]
                xn = list(x)
                xn[nu] = (xn[nu] + 1) % sites[nu]
                p = (U0[(mu,) + x] @ U0[(nu,) + tuple(xm)] @ U0[(mu,) + tuple(xn)].conj().T
                     @ U0[(nu,) + x].conj().T)
                total += np.trace(p).real / N
                count += 1
    return total / count


def test_ensemble_append_reopen_and_read_back(tmp_path):
    path = tmp_path / "ens.h5"
    rng = RandomStreams(7, 3)
    a = random_links(seed=1, shape=SHAPE, batch=3)
    b = random_links(seed=2, shape=SHAPE, batch=3)
    config = {"theory": {"name": "su3", "beta": 6.0}, "lattice": {"shape": list(SHAPE)}}
    with Ensemble(path, "w", metadata={"config": config, "seed": 7}) as ens:
        ens.append_configurations(a, trajectory=10)
        ens.append_history("plaquette", np.full((3, 4), 0.5))
        ens.update_metadata(rng_state=rng.state(), acceptance=np.float64(0.875))
    rng.normal((5,))  # the streams move on; the stored state must restore the old position
    with Ensemble(path, "a") as ens:  # reopen and append
        assert ens.n_configurations == 3
        ens.append_configurations(b, trajectory=20)
        ens.append_history("plaquette", np.full((3, 2), 0.25))
        ens.append_history("delta_h", np.arange(6.0).reshape(3, 2))
    with Ensemble(path) as ens:
        np.testing.assert_array_equal(ens.configurations(), np.concatenate([a, b]))
        np.testing.assert_array_equal(ens.configurations(4), b[1:2])
        np.testing.assert_array_equal(ens.configurations(slice(1, 5, 2)), np.stack([a[1], b[0]]))
        np.testing.assert_array_equal(ens.configurations([4, 0, 4]), np.stack([b[1], a[0], b[1]]))
        np.testing.assert_array_equal(ens.trajectories, [10] * 3 + [20] * 3)
        np.testing.assert_array_equal(ens.chains, [0, 1, 2] * 2)
        ref = [_plaquette_loop(u) for u in np.concatenate([a, b])]
        np.testing.assert_allclose(ens.plaquettes, ref, rtol=0, atol=1e-13)
        hist = ens.histories()
        assert sorted(hist) == ["delta_h", "plaquette"]
        np.testing.assert_array_equal(hist["plaquette"][0], [0.5] * 4 + [0.25] * 2)
        assert hist["delta_h"].shape == (3, 2)
        meta = ens.metadata
    assert meta["config"] == config and meta["seed"] == 7 and meta["acceptance"] == 0.875
    assert set(meta["versions"]) == {"lattice_ml", "numpy", "h5py", "python"}
    restored = RandomStreams(0, 3)
    restored.set_state(meta["rng_state"])
    fresh = RandomStreams(7, 3)
    np.testing.assert_array_equal(restored.normal((5,)), fresh.normal((5,)))


def test_default_trajectory_and_shape_checks(tmp_path):
    path = tmp_path / "e.h5"
    with Ensemble(path, "x") as ens:
        U = random_links(seed=3, shape=SHAPE)
        ens.append_configurations(U)
        ens.append_configurations(U)
        assert list(ens.trajectories) == [0, 1]
        with pytest.raises(ValueError, match=r"configurations are \(4, 4, 4, 2, 2, 3, 3\) "
                                             r"complex128; cannot append"):
            ens.append_configurations(U.astype(np.complex64))
        with pytest.raises(ValueError, match=r"history 'h' is \[1, time\]; cannot append a "
                                             r"block of shape \(2, 3\)"):
            ens.append_history("h", np.zeros((1, 3)))
            ens.append_history("h", np.zeros((2, 3)))
        with pytest.raises(ValueError, match=r"must be \[chain, time, \.\.\.\]"):
            ens.append_history("g", np.zeros(3))
        with pytest.raises(IndexError, match="configuration 5 out of range"):
            ens.configurations(5)
        with pytest.raises(KeyError, match="no history 'nope'"):
            ens.history("nope")
    with pytest.raises(FileExistsError):
        Ensemble(path, "x")


def test_scalar_field_and_u1_ensembles(tmp_path):
    phi = np.random.default_rng(0).normal(size=(2, 8, 8))
    write_gauge(tmp_path / "phi.h5", phi, "hdf5", metadata={"theory": "phi4"})
    with Ensemble(tmp_path / "phi.h5") as ens:
        np.testing.assert_array_equal(ens.configurations(), phi)
        assert ens.plaquettes is None
    theta = np.random.default_rng(1).uniform(-np.pi, np.pi, size=(2, 2, 6, 4))
    U1 = np.exp(1j * theta)[..., None, None]  # 2D U(1) [batch, 2, 6, 4, 1, 1]
    write_gauge(tmp_path / "u1.h5", U1, "hdf5")
    V = read_gauge(tmp_path / "u1.h5")  # plaquettes checked against the recorded ones
    np.testing.assert_array_equal(V, U1)
    _, info = inspect_gauge(tmp_path / "u1.h5")
    assert info.N == 1 and info.lattice == (6, 4) and info.n_configs == 2
    expected = np.mean(np.cos(theta[:, 0] + np.roll(theta[:, 1], -1, axis=1)
                              - np.roll(theta[:, 0], -1, axis=2) - theta[:, 1]), axis=(1, 2))
    with Ensemble(tmp_path / "u1.h5") as ens:
        np.testing.assert_allclose(ens.plaquettes, expected, atol=1e-14)


def test_uncommitted_append_is_ignored(tmp_path):
    """A crash between writing the data and raising the committed count leaves entries that
    readers do not see."""
    path = tmp_path / "c.h5"
    U = random_links(seed=4, shape=SHAPE, batch=2)
    write_gauge(path, U, "hdf5")
    with h5py.File(path, "a") as f:  # simulate the torn append: data resized, count not raised
        f["configurations"].resize(5, axis=0)
    with Ensemble(path) as ens:
        assert ens.n_configurations == 2
        np.testing.assert_array_equal(ens.configurations(), U)
    with Ensemble(path, "a") as ens:  # the next append overwrites the torn slots
        ens.append_configurations(U[:1])
        assert ens.n_configurations == 3
        np.testing.assert_array_equal(ens.configurations(2), U[:1])


def test_corrupted_chunk_and_foreign_files(tmp_path):
    path = tmp_path / "k.h5"
    U = random_links(seed=5, shape=SHAPE, batch=2)
    write_gauge(path, U, "hdf5")
    with h5py.File(path, "r") as f:
        offset = f["configurations"].id.get_chunk_info(1).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 100] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(GaugeFileError, match="corrupted"):
        read_gauge(path)
    with Ensemble(path) as ens:  # the intact chunk still reads
        np.testing.assert_array_equal(ens.configurations(0), U[:1])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(GaugeFileError, match="not a lattice-ml ensemble"):
        read_gauge(tmp_path / "other.h5")
    (tmp_path / "trunc.h5").write_bytes(bytes(raw[:2000]))
    with pytest.raises(GaugeFileError, match="cannot open as HDF5"):
        read_gauge(tmp_path / "trunc.h5")


def test_recorded_plaquette_mismatch_is_named(tmp_path):
    path = tmp_path / "p.h5"
    write_gauge(path, random_links(seed=6, shape=SHAPE, batch=2), "hdf5")
    with h5py.File(path, "a") as f:
        f["plaquette"][1] += 1e-6
    with pytest.raises(GaugeFileError, match=r"plaquette \(recorded at append, worst "
                                             r"configuration\): MISMATCH .*1\.00e-06"):
        read_gauge(path)
    read_gauge(path, index=0)  # the other configuration is fine


def test_read_into_namespaces(tmp_path, xp):
    path = tmp_path / "x.h5"
    U = random_links(seed=8, shape=SHAPE, batch=2)
    write_gauge(path, U, "hdf5")
    V = read_gauge(path, xp=xp, index=[1])
    assert V.shape == (1,) + U.shape[1:] and V.dtype == xp.complex128
    with Ensemble(path) as ens:
        W = ens.configurations(xp=xp, dtype=xp.complex64)
    assert W.dtype == xp.complex64
    from lattice_ml.backend import to_numpy

    np.testing.assert_array_equal(to_numpy(V), U[1:])


def test_hand_built_ensemble_is_read(tmp_path):
    """A file made with plain h5py from the documented layout (plaquettes by a loop) reads back
    through the library with its checks passing."""
    import json

    U = random_links(seed=12, shape=SHAPE, batch=2)
    path = tmp_path / "hand.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "lattice-ml ensemble"
        f.attrs["format_version"] = 1
        ds = f.create_dataset("configurations", data=U, maxshape=(None,) + U.shape[1:],
                              chunks=(1,) + U.shape[1:])
        ds.attrs["n"] = 2
        f["trajectory"] = np.array([5, 5])
        f["chain"] = np.array([0, 1])
        f["plaquette"] = np.array([_plaquette_loop(u) for u in U])
        h = f.create_group("history").create_dataset("plaq", data=np.ones((2, 4)),
                                                     maxshape=(2, None))
        h.attrs["n"] = 3  # the fourth entry is not committed
        f["metadata"] = json.dumps({"seed": 9})
    np.testing.assert_array_equal(read_gauge(path), U)
    with Ensemble(path) as ens:
        assert ens.history("plaq").shape == (2, 3) and ens.metadata == {"seed": 9}
        assert list(ens.trajectories) == [5, 5]
    with h5py.File(path, "a") as f:
        f["plaquette"][0] = 0.0
    with pytest.raises(GaugeFileError, match="plaquette .*MISMATCH"):
        read_gauge(path)

"""Tests of lattice_ml.optim: closed-form updates, convergence, clipping, state round trips,
schedules and argument checking, on every array namespace."""

import math

import numpy as np
import pytest

from lattice_ml.backend import to_numpy
from lattice_ml.optim import (SGD, Adam, clip_by_global_norm, clip_by_value, constant,
                              cosine_decay, exponential_decay, global_norm, warmup)


def arr(xp, values, dtype="float64"):
    return xp.asarray(np.asarray(values, dtype=dtype))


def npy(x):
    return np.asarray(to_numpy(x))


# ------------------------------------------------------------------------------------------
# closed forms
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("g", [0.37, -2.5, 1e-3])
def test_adam_constant_gradient_moves_lr_sign(xp, g):
    """Bias correction: with a constant gradient every step moves by lr g/(|g| + eps)."""
    lr, eps = 0.1, 1e-8
    opt = Adam(lr, eps=eps)
    p = arr(xp, 1.0)
    for k in range(1, 6):
        p = opt.step(p, arr(xp, g))
        assert npy(p) == pytest.approx(1.0 - k * lr * g / (abs(g) + eps), rel=1e-14, abs=1e-15)
    # eps = 0: exactly lr * sign(g) per step (to rounding of m_hat and sqrt(v_hat))
    opt = Adam(lr, eps=0.0)
    p = arr(xp, 0.0)
    p = opt.step(p, arr(xp, g))
    assert npy(p) == pytest.approx(-lr * math.copysign(1.0, g), rel=1e-15)


def test_adam_matches_hand_recursion(xp):
    """Several steps with varying scalar gradients against the formulas written out by hand."""
    lr, (b1, b2), eps = 0.05, (0.8, 0.95), 1e-6
    gs = [0.3, -1.2, 0.7, 2.0, -0.1]
    for amsgrad in (False, True):
        opt = Adam(lr, betas=(b1, b2), eps=eps, amsgrad=amsgrad)
        p = arr(xp, [0.5])
        theta, m, v, vmax = 0.5, 0.0, 0.0, 0.0
        for t, g in enumerate(gs, start=1):
            p = opt.step(p, arr(xp, [g]))
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            vmax = max(vmax, v)
            vv = vmax if amsgrad else v
            theta = theta - lr * (m / (1 - b1 ** t)) / (math.sqrt(vv / (1 - b2 ** t)) + eps)
            assert npy(p)[0] == pytest.approx(theta, rel=1e-13)


def test_adam_weight_decay_decoupled_and_l2(xp):
    lr, wd, g0, th0 = 0.1, 0.3, 0.5, 2.0
    opt = Adam(lr, weight_decay=wd, eps=0.0)
    p = opt.step(arr(xp, th0), arr(xp, g0))
    assert npy(p) == pytest.approx(th0 - lr * wd * th0 - lr * 1.0, rel=1e-14)
    opt = Adam(lr, weight_decay=wd, eps=0.0, decoupled_weight_decay=False)
    p = opt.step(arr(xp, th0), arr(xp, -2.0))  # g + wd*theta = -1.4 -> moves by +lr
    assert npy(p) == pytest.approx(th0 + lr, rel=1e-14)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_hand_recursion(xp, nesterov):
    lr, mu, wd = 0.1, 0.9, 0.01
    gs = [1.0, -0.5, 0.25, 2.0, 0.0, -1.0]
    opt = SGD(lr, momentum=mu, nesterov=nesterov, weight_decay=wd)
    p = arr(xp, [1.0, -3.0])
    theta = np.array([1.0, -3.0])
    b = None
    for g in gs:
        gv = np.array([g, 2 * g])
        p = opt.step(p, arr(xp, gv))
        gg = gv + wd * theta
        b = gg if b is None else mu * b + gg
        d = gg + mu * b if nesterov else b
        theta = theta - lr * d
        np.testing.assert_allclose(npy(p), theta, rtol=1e-14, atol=1e-15)


def test_plain_sgd_is_gradient_descent(xp):
    opt = SGD(0.25)
    p = opt.step(arr(xp, [1.0, 2.0]), arr(xp, [4.0, -8.0]))
    np.testing.assert_array_equal(npy(p), [0.0, 4.0])


# ------------------------------------------------------------------------------------------
# convergence
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: SGD(0.1), lambda: SGD(0.05, momentum=0.9), lambda: SGD(0.05, momentum=0.9,
                                                                    nesterov=True),
    lambda: Adam(0.1), lambda: Adam(0.1, amsgrad=True)])
def test_quadratic_convergence(xp, make):
    """f = 1/2 (x - c)^T A (x - c), A = diag(1, 4, 9): minimum at c."""
    A = np.array([1.0, 4.0, 9.0])
    c = np.array([1.0, -2.0, 0.5])
    Ax, cx = arr(xp, A), arr(xp, c)
    opt = make()
    p = arr(xp, [0.0, 0.0, 0.0])
    for _ in range(500):
        p = opt.step(p, Ax * (p - cx))
    np.testing.assert_allclose(npy(p), c, atol=1e-6)


def test_adam_rosenbrock(xp):
    """Adam (lr 0.05) reaches the Rosenbrock minimum (1, 1) from (-1.5, 2) in 3000 steps."""

    def grad(p):
        x, y = p[0], p[1]
        return xp.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])

    opt = Adam(0.05)
    p = arr(xp, [-1.5, 2.0])
    for _ in range(3000):
        p = opt.step(p, grad(p))
    np.testing.assert_allclose(npy(p), [1.0, 1.0], atol=1e-6)


# ------------------------------------------------------------------------------------------
# parameter sets, purity
# ------------------------------------------------------------------------------------------
def test_dict_and_list_parameter_sets(xp):
    """A nested dict/list set is updated leaf by leaf exactly as single arrays would be."""
    rng = np.random.default_rng(0)
    shapes = {"w": (3, 2), "b": (2,), "layers": [(4,), (2, 2)]}
    host = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2),
            "layers": [rng.normal(size=4), rng.normal(size=(2, 2))]}
    params = {"w": arr(xp, host["w"]), "b": arr(xp, host["b"]),
              "layers": [arr(xp, host["layers"][0]), arr(xp, host["layers"][1])]}
    opt = Adam(0.01)
    singles = {"w": Adam(0.01), "b": Adam(0.01), "l0": Adam(0.01), "l1": Adam(0.01)}
    sp = {"w": params["w"], "b": params["b"], "l0": params["layers"][0], "l1": params["layers"][1]}
    for _ in range(3):
        gh = {k: rng.normal(size=s) for k, s in (("w", shapes["w"]), ("b", shapes["b"]),
                                               ("l0", (4,)), ("l1", (2, 2)))}
        grads = {"w": arr(xp, gh["w"]), "b": arr(xp, gh["b"]),
                 "layers": [arr(xp, gh["l0"]), arr(xp, gh["l1"])]}
        before = {k: npy(v).copy() for k, v in (("w", params["w"]), ("b", params["b"]))}
        new = opt.step(params, grads)
        # inputs untouched
        np.testing.assert_array_equal(npy(params["w"]), before["w"])
        np.testing.assert_array_equal(npy(params["b"]), before["b"])
        assert isinstance(new, dict) and isinstance(new["layers"], list)
        for k in sp:
            sp[k] = singles[k].step(sp[k], arr(xp, gh[k]))
        np.testing.assert_array_equal(npy(new["w"]), npy(sp["w"]))
        np.testing.assert_array_equal(npy(new["b"]), npy(sp["b"]))
        np.testing.assert_array_equal(npy(new["layers"][0]), npy(sp["l0"]))
        np.testing.assert_array_equal(npy(new["layers"][1]), npy(sp["l1"]))
        params = new
    st = opt.state_dict()
    assert st["names"] == ["w", "b", "layers/0", "layers/1"]
    # tuples stay tuples
    out = SGD(0.1).step((arr(xp, [1.0]), arr(xp, [2.0])), (arr(xp, [1.0]), arr(xp, [1.0])))
    assert isinstance(out, tuple) and len(out) == 2


def test_float32_parameters_keep_dtype(xp):
    p = xp.asarray(np.ones(3, dtype=np.float32))
    g = xp.asarray(np.full(3, 0.5))  # float64 gradient is cast to the parameter's dtype
    for opt in (SGD(0.1, momentum=0.5), Adam(0.1)):
        q = opt.step(opt.step(p, g), g)
        assert q.dtype == xp.float32


# ------------------------------------------------------------------------------------------
# state round trip
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: Adam(cosine_decay(0.05, 20, 1e-3), weight_decay=0.01),
    lambda: Adam(warmup(0.05, 3), amsgrad=True),
    lambda: SGD(exponential_decay(0.1, 0.9), momentum=0.9, nesterov=True, weight_decay=1e-3)])
def test_state_round_trip_bit_identical(xp, make):
    """Checkpoint after k steps, resume in a fresh optimiser: later steps are bit-identical."""
    rng = np.random.default_rng(1)
    gseq = [{"a": rng.normal(size=(3, 4)), "b": rng.normal(size=5)} for _ in range(12)]
    for g in gseq:
        g["b"] = g["b"].astype(np.float32)

    def grads(k):
        return {"a": arr(xp, gseq[k]["a"]), "b": xp.asarray(gseq[k]["b"])}

    p0 = {"a": arr(xp, rng.normal(size=(3, 4))),
          "b": xp.asarray(rng.normal(size=5).astype(np.float32))}
    ref = make()
    p = p0
    traj = []
    for k in range(12):
        p = ref.step(p, grads(k))
        traj.append(p)

    opt = make()
    q = p0
    for k in range(5):
        q = opt.step(q, grads(k))
    state = opt.state_dict()
    # plain data: host arrays, numbers, strings, lists
    assert state["step"] == 5
    for slot in state["buffers"].values():
        for a in slot.values():
            assert type(a) is np.ndarray
    # a round trip through a pickle-free copy of the data
    state = {k: v for k, v in state.items()}
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.state_dict()["step"] == 5
    q = {"a": arr(xp, npy(q["a"])), "b": xp.asarray(npy(q["b"]))}  # reloaded parameters
    for k in range(5, 12):
        q = resumed.step(q, grads(k))
        for name in ("a", "b"):
            np.testing.assert_array_equal(npy(q[name]), npy(traj[k][name]))
            assert q[name].dtype == traj[k][name].dtype
    # the state dict is a copy: mutating it does not touch the optimiser
    st = resumed.state_dict()
    before = resumed.state_dict()["buffers"]["momentum" if isinstance(resumed, SGD) else "m"]
    next(iter(st["buffers"].values()))["a"][...] = 123.0
    after = resumed.state_dict()["buffers"]["momentum" if isinstance(resumed, SGD) else "m"]
    np.testing.assert_array_equal(before["a"], after["a"])


def test_state_dict_errors():
    opt = Adam(0.1)
    p = np.zeros(3)
    opt.step(p, np.ones(3))
    st = opt.state_dict()
    with pytest.raises(ValueError, match="Adam optimiser cannot be loaded into SGD"):
        SGD(0.1).load_state_dict(st)
    bad = dict(st, buffers={"m": st["buffers"]["m"], "v": st["buffers"]["v"]})
    with pytest.raises(ValueError, match="lacks the buffer 'vmax'"):
        Adam(0.1).load_state_dict(bad)
    fresh = Adam(0.1)
    fresh.load_state_dict(st)
    with pytest.raises(ValueError, match=r"parameter '' has shape \(4,\)"):
        fresh.step(np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="optimiser state holds"):
        opt.step({"x": np.zeros(3)}, {"x": np.ones(3)})


# ------------------------------------------------------------------------------------------
# clipping
# ------------------------------------------------------------------------------------------
def test_clip_by_global_norm(xp):
    g = {"a": arr(xp, [3.0, 0.0]), "b": [arr(xp, [[4.0, 12.0]])]}
    assert global_norm(g) == 13.0
    clipped, norm = clip_by_global_norm(g, 6.5)
    assert norm == 13.0
    np.testing.assert_allclose(npy(clipped["a"]), [1.5, 0.0], rtol=1e-15)
    np.testing.assert_allclose(npy(clipped["b"][0]), [[2.0, 6.0]], rtol=1e-15)
    assert global_norm(clipped) == pytest.approx(6.5, rel=1e-15)
    same, norm = clip_by_global_norm(g, 13.0)
    assert norm == 13.0 and same["a"] is g["a"]
    # random set: norm after clipping is max_norm, direction kept
    rng = np.random.default_rng(3)
    h = [arr(xp, rng.normal(size=(5, 3))), arr(xp, rng.normal(size=7))]
    n0 = math.sqrt(sum(float(np.sum(npy(a) ** 2)) for a in h))
    c, n = clip_by_global_norm(h, 0.5)
    assert n == pytest.approx(n0, rel=1e-15)
    assert global_norm(c) == pytest.approx(0.5, rel=1e-14)
    for a, b in zip(c, h):
        np.testing.assert_allclose(npy(a), npy(b) * 0.5 / n0, rtol=1e-15)


def test_clip_nonfinite_and_value(xp):
    g = [arr(xp, [1.0, float("nan")])]
    same, n = clip_by_global_norm(g, 1.0)
    assert math.isnan(n) and same is g
    with pytest.raises(ValueError, match=r"non-finite entries in \['0'\]"):
        clip_by_global_norm(g, 1.0, error_if_nonfinite=True)
    c = clip_by_value({"x": arr(xp, [-3.0, 0.2, 5.0])}, 1.0)
    np.testing.assert_array_equal(npy(c["x"]), [-1.0, 0.2, 1.0])
    with pytest.raises(ValueError, match="max_norm"):
        clip_by_global_norm(g, -1.0)


# ------------------------------------------------------------------------------------------
# schedules
# ------------------------------------------------------------------------------------------
def test_schedules_values():
    assert constant(0.3)(0) == 0.3 and constant(0.3)(10 ** 6) == 0.3
    cd = cosine_decay(1.0, 100, lr_min=0.1)
    assert cd(0) == 1.0
    assert cd(50) == pytest.approx(0.55, rel=1e-15)
    assert cd(25) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)), rel=1e-15)
    assert cd(100) == pytest.approx(0.1, rel=1e-15) and cd(1000) == pytest.approx(0.1, rel=1e-15)
    ed = exponential_decay(2.0, 0.5, decay_steps=10)
    assert ed(0) == 2.0 and ed(10) == 1.0 and ed(5) == pytest.approx(2.0 * 0.5 ** 0.5, rel=1e-15)
    eds = exponential_decay(2.0, 0.5, decay_steps=10, staircase=True)
    assert eds(9) == 2.0 and eds(10) == 1.0 and eds(25) == 0.5
    w = warmup(cd, 4)
    assert [w(t) for t in range(3)] == pytest.approx([cd(0) / 4, cd(1) / 2, cd(2) * 3 / 4],
                                                     rel=1e-15)
    assert w(3) == cd(3) and w(50) == cd(50)
    assert warmup(0.2, 2)(0) == 0.1


def test_schedule_drives_the_optimiser(xp):
    """The update k (k = 1, 2, ...) uses lr(k - 1): plain SGD with g = 1 moves by lr(k - 1)."""
    sched = exponential_decay(1.0, 0.5)
    opt = SGD(sched)
    p = arr(xp, 0.0)
    total = 0.0
    for k in range(4):
        assert opt.current_lr == sched(k)
        p = opt.step(p, arr(xp, 1.0))
        total -= sched(k)
        assert npy(p) == pytest.approx(total, rel=1e-15)
    opt = SGD(lambda t: -1.0 if t == 1 else 0.1)
    p = opt.step(p, arr(xp, 1.0))
    with pytest.raises(ValueError, match="returned -1.0 at step 1"):
        opt.step(p, arr(xp, 1.0))


# ------------------------------------------------------------------------------------------
# bad arguments
# ------------------------------------------------------------------------------------------
def test_bad_arguments():
    with pytest.raises(ValueError, match="lr must be finite and >= 0"):
        Adam(-0.1)
    with pytest.raises(ValueError, match="lr must be finite and >= 0"):
        SGD(float("nan"))
    with pytest.raises(ValueError, match=r"betas\[0\] must be in \[0, 1\)"):
        Adam(0.1, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\)"):
        Adam(0.1, betas=(0.9, -0.1))
    with pytest.raises(ValueError, match="betas must be a pair"):
        Adam(0.1, betas=0.9)
    with pytest.raises(ValueError, match="eps"):
        Adam(0.1, eps=-1.0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        SGD(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="nesterov=True needs momentum"):
        SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="weight_decay"):
        SGD(0.1, weight_decay=-1.0)
    with pytest.raises(ValueError, match="total_steps must be a positive integer"):
        cosine_decay(0.1, 0)
    with pytest.raises(ValueError, match="lr_min"):
        cosine_decay(0.1, 10, lr_min=0.2)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup(0.1, 0)


def test_mismatched_structures(xp):
    opt = Adam(0.1)
    a = arr(xp, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"missing in grads: \['b'\]"):
        opt.step({"a": a, "b": a}, {"a": a})
    with pytest.raises(ValueError, match=r"not in params: \['c'\]"):
        opt.step({"a": a}, {"a": a, "c": a})
    with pytest.raises(ValueError, match="different container types"):
        opt.step([a, a], (a, a))
    with pytest.raises(ValueError, match=r"gradient 'a' has shape \(3,\)"):
        opt.step({"a": a}, {"a": arr(xp, [1.0, 2.0, 3.0])})
    with pytest.raises(ValueError, match="parameter '0': dtype"):
        opt.step([xp.asarray(np.ones(2, dtype=np.int64))], [a])
    with pytest.raises(ValueError, match="empty"):
        opt.step([], [])
    assert opt.step_count == 0  # nothing was applied

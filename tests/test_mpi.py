"""Chains over MPI ranks (lattice_ml.parallel): real ``mpiexec`` launches of tests/mpi/*.py,
whose rank 0 compares the gathered results with one process bit for bit; the launches on
different rank counts are compared with each other too. Skips when mpi4py or mpiexec is absent
(``pip install '.[mpi]'``)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lattice_ml.parallel import (SERIAL, CartesianGrid, Communicator, chain_blocks, gather_sites,
                                 launched_by_mpi, local_sites, world)

HERE = Path(__file__).resolve().parent


def mpiexec():
    """The launcher beside this Python (the ``mpich`` wheel puts it in the venv), or on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def have_mpi():
    try:
        import mpi4py
    except ImportError:
        return False
    return mpi4py.__version__ >= "4" and mpiexec() is not None


needs_mpi = pytest.mark.skipif(not have_mpi(), reason="mpi4py or mpiexec not installed "
                                                      "(pip install '.[mpi]')")


def launch(n, script, *args, timeout=600):
    """``mpiexec -n n python tests/mpi/<script> args``; fails with the ranks' output."""
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    cmd = [mpiexec(), "-n", str(n), sys.executable, str(HERE / "mpi" / script), *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res


def test_chain_blocks_are_contiguous_and_cover_every_chain():
    for n_chains in range(1, 12):
        for size in range(1, n_chains + 1):
            blocks = chain_blocks(n_chains, size)
            assert blocks[0][0] == 0 and blocks[-1][1] == n_chains
            assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
            counts = [b - a for a, b in blocks]
            assert max(counts) - min(counts) <= 1 and min(counts) >= 1
            assert counts == sorted(counts, reverse=True)  # the extra chains on the first ranks
    with pytest.raises(ValueError, match="at least one chain"):
        chain_blocks(3, 4)
    with pytest.raises(ValueError):
        chain_blocks(0, 1)


def test_serial_communicator_is_the_identity():
    xp = np
    x = np.arange(6.0).reshape(3, 2)
    assert SERIAL.size == 1 and SERIAL.rank == 0 and SERIAL.is_root
    assert SERIAL.chains(3) == Communicator().chains(3)
    assert SERIAL.gather_chains(x) is x and SERIAL.allgather_chains(x) is x
    np.testing.assert_array_equal(SERIAL.sum_chains(x), xp.sum(x, axis=0))
    parts = [{"a": np.array([0.1]), "b": {"c": np.array([1e16])}},
             {"a": np.array([0.2]), "b": {"c": np.array([1.0])}},
             {"a": np.array([0.3]), "b": {"c": np.array([-1e16])}}]
    total = SERIAL.ordered_sum(parts)
    assert total["a"][0] == (0.1 + 0.2) + 0.3  # left to right, not 0.1 + (0.2 + 0.3)
    assert total["b"]["c"][0] == 0.0  # (1e16 + 1) - 1e16 in float64, order fixed
    assert SERIAL.bcast(5) == 5 and SERIAL.allgather(5) == [5]


def test_world_without_a_launcher_is_serial(monkeypatch):
    for v in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(v, raising=False)
    assert not launched_by_mpi()
    assert world() is SERIAL


@needs_mpi
def test_two_ranks_are_bit_identical_to_one_process(tmp_path):
    """phi^4 and SU(3) HMC, Wilson CG batch, flow training step: 5 chains over 2 ranks (3 + 2)."""
    res = launch(2, "chains.py", tmp_path / "n2.npz")
    assert "ranks=2 ok" in res.stdout
    assert int(np.load(tmp_path / "n2.npz")["size"]) == 2


@needs_mpi
@pytest.mark.slow
def test_one_three_and_four_ranks_agree_bit_for_bit(tmp_path):
    """The same jobs on 1 and 4 ranks (NumPy) and on 3 ranks with array-api-strict: every
    launch equals one process of its namespace (checked by its rank 0), and the NumPy launches
    equal each other. (NumPy runs the Numba kernels, array-api-strict the array-API reference
    code: those two agree to round-off, not bit for bit, with or without MPI.)"""
    runs = {}
    for n, xp in ((1, "numpy"), (4, "numpy"), (3, "array_api_strict")):
        path = tmp_path / f"n{n}.npz"
        assert f"ranks={n} ok" in launch(n, "chains.py", path, xp).stdout
        runs[n] = dict(np.load(path))
    assert set(runs[4]) == set(runs[1]) == set(runs[3])
    for k, v in runs[1].items():
        if k != "size":
            np.testing.assert_array_equal(runs[4][k], v, err_msg=k)
            np.testing.assert_allclose(runs[3][k], v, rtol=1e-9, atol=1e-12, err_msg=k)


CLI_CONFIG = """
[lattice]
shape = [4, 4]
[sampler]
n_chains = 3
n_therm = 4
n_samples = {n}
[run]
progress = "never"
checkpoint_every = 3
keep_checkpoint = true
"""


def lattice_ml_command():
    """The installed ``lattice-ml`` entry point beside this Python (what a user runs under
    mpiexec), else the same ``main`` through the interpreter."""
    exe = Path(sys.executable).with_name("lattice-ml")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from lattice_ml.cli.main import main; "
            "sys.exit(main())"]


def cli(n, *args, check=True):
    """``lattice-ml ARGS`` in one process (n = 0) or under ``mpiexec -n n``."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [*lattice_ml_command(), *map(str, args)]
    if n:
        cmd = [mpiexec(), "-n", str(n), *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)}:\n{res.stdout}\n{res.stderr}"
    return res


def _same_run(a, b, min_keys=6):
    """Summaries equal apart from the decomposition and timings; histories and the checkpoints'
    ensembles, stream states and histories equal bit for bit."""
    import json

    from lattice_ml.io.checkpoint import load_checkpoint
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for s in (sa, sb):
        s.pop("elapsed_s"), s.pop("parallel")
    assert sa == sb
    ha, hb = np.load(a / "history.npz"), np.load(b / "history.npz")
    assert sorted(ha) == sorted(hb) and len(ha.files) >= min_keys
    for k in ha:
        np.testing.assert_array_equal(ha[k], hb[k], err_msg=k)
    ca, cb = (load_checkpoint(d / "checkpoint.ckpt", kind="run").state for d in (a, b))
    np.testing.assert_array_equal(ca["field"], cb["field"])
    assert ca["rng"] == cb["rng"] and ca["next_update"] == cb["next_update"]
    for k in ca["history"]:
        np.testing.assert_array_equal(ca["history"][k], cb["history"][k], err_msg=k)


@needs_mpi
@pytest.mark.slow
def test_command_on_two_ranks_equals_one_process_and_resumes_on_three(tmp_path):
    """``mpiexec -n 2 lattice-ml run``: summary, history.npz and checkpoint of a 3-chain run as
    in one process; the 2-rank run extended on 3 ranks equals the one-process run extended in
    one process; an error ends both ranks with one line and exit code 2."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(CLI_CONFIG.format(n=6))
    cli(0, "run", cfg, "--out", tmp_path / "one")
    cli(2, "run", cfg, "--out", tmp_path / "two")
    import json
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["parallel"] == {
        "ranks": 2, "chains_per_rank": [2, 1]}
    _same_run(tmp_path / "one", tmp_path / "two")
    cli(0, "run", "--resume", tmp_path / "one", "--set", "sampler.n_samples=9")
    cli(3, "run", "--resume", tmp_path / "two", "--set", "sampler.n_samples=9")
    _same_run(tmp_path / "one", tmp_path / "two")
    bad = cli(2, "run", cfg, "--out", tmp_path / "bad", "--set", "sampler.n_chains=1",
              check=False)
    assert bad.returncode == 2, bad.stderr
    errors = [line for line in bad.stderr.splitlines() if line.startswith("lattice-ml: error")]
    assert len(errors) == 1 and "cannot be split over 2 MPI ranks" in errors[0], bad.stderr


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("grid", [None, (2, 1)], ids=["chains", "grid"])
def test_interrupted_two_rank_run_stops_every_rank_at_one_checkpoint(tmp_path, grid):
    """SIGINT to ``mpiexec -n 2`` stops both ranks at the same update with a checkpoint (exit
    130, no summary); its ensemble, streams and histories equal those of a one-process run that
    ends at that update (chains split, or sites with ``grid = [2, 1]`` against ``[1, 1]``)."""
    import signal
    import time

    from lattice_ml.io.checkpoint import load_checkpoint
    cfg = tmp_path / "c.toml"
    split = "" if grid is None else f"[parallel]\ngrid = {list(grid)}\n"
    cfg.write_text(CLI_CONFIG.format(n=100000).replace("checkpoint_every = 3",
                                                        "checkpoint_every = 1") + split)
    out = tmp_path / "two"
    cmd = [mpiexec(), "-n", "2", *lattice_ml_command(), "run", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300

    def updates():
        try:
            return load_checkpoint(out / "checkpoint.ckpt", kind="run").state["next_update"]
        except Exception:  # noqa: BLE001 - not written yet
            return 0
    while updates() < 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "continue with: lattice-ml run --resume" in err and not (out / "summary.json").exists()
    two = load_checkpoint(out / "checkpoint.ckpt", kind="run").state
    done = two["next_update"]
    assert 4 < done < 100000
    # 4 thermalisation updates, then measured
    cfg.write_text(CLI_CONFIG.format(n=done - 4) + split.replace("[2, 1]", "[1, 1]"))
    cli(0, "run", cfg, "--out", tmp_path / "one")
    one = load_checkpoint(tmp_path / "one" / "checkpoint.ckpt", kind="run").state
    assert one["next_update"] == done
    np.testing.assert_array_equal(one["field"], two["field"])
    assert one["rng"] == two["rng"]
    assert sorted(one["history"]) == sorted(two["history"])
    for k in one["history"]:
        np.testing.assert_array_equal(one["history"][k], two["history"][k], err_msg=k)


@needs_mpi
@pytest.mark.parametrize("n", [2, 4])
def test_halo_shift_over_every_grid_of_ranks_is_bit_identical(n):
    """Sites over a Cartesian grid of ranks (2D and 4D, every grid of n ranks): halo_shift of
    the local blocks equals the blocks of shift on the whole field, in every direction and by
    -2..2; the gathered sum of a nearest-neighbour term equals one process."""
    res = launch(n, "domains.py")
    assert f"ranks={n} ok" in res.stdout


def test_cartesian_grid_geometry():
    grid = CartesianGrid((8, 4, 6), (2, 1, 3))
    assert grid.local_shape == (4, 4, 2) and grid.size == 6
    for r in range(grid.size):
        assert grid.rank_at(grid.coords(r)) == r
        for mu in range(3):
            assert grid.neighbour(grid.neighbour(r, mu, 1), mu, -1) == r
    assert grid.start(5) == (4, 0, 4)
    x = np.arange(8 * 4 * 6.0).reshape(1, 8, 4, 6)
    assert local_sites(grid, 5, x).shape == (1, 4, 4, 2)
    assert gather_sites(SERIAL, CartesianGrid((8, 4, 6), (1, 1, 1)), x) is x
    with pytest.raises(ValueError, match="evenly"):
        CartesianGrid((8, 4), (3, 1))


# -- sites over ranks in the command: parallel.grid ------------------------------------------------
GRID_CONFIG = """
[lattice]
shape = {shape}
[theory]
name = "{theory}"
[sampler]
n_chains = 2
n_therm = 2
n_samples = {n}
n_steps = 6
adapt_steps = false
[run]
progress = "never"
checkpoint_every = 3
keep_checkpoint = true
[parallel]
grid = {grid}
"""


def _grid_config(path, theory="phi4", shape=(8, 4), grid=(1, 1), n=6):
    text = GRID_CONFIG.format(theory=theory, shape=list(shape), grid=list(grid), n=n)
    if theory == "su3":  # reunitarisation on the blocks, gauge measurements on the gathered field
        text = text.replace("[run]\n", "[run]\nreunitarize_every = 2\n") + \
            "[measure]\nevery = 1\nwilson_loops = 2\n"
    path.write_text(text)
    return path


def _same_physics(a, b):
    """:func:`_same_run` with the entries a grid or a resume legitimately changes left out: the
    summary's ``parallel`` record, its ``config.parallel.grid`` and ``segments``."""
    import json
    for d in (a, b):
        s = json.loads((d / "summary.json").read_text())
        s.get("config", {}).get("parallel", {}).pop("grid", None)
        s.pop("segments")
        (d / "summary.json").write_text(json.dumps(s))
    _same_run(a, b, min_keys=4)


@pytest.mark.parametrize("sets, key, words", [
    (["parallel.grid=[1]"], "parallel.grid", "has 1 entries"),
    (["parallel.grid=[3, 1]"], "parallel.grid", "does not divide lattice.shape[0] = 8"),
    (["parallel.grid=[2, 1]"], "parallel.grid", "needs 2 MPI rank(s)"),
    (["parallel.grid=[0, 1]"], "parallel.grid", "positive integers"),
    (["sampler.name=heatbath", "theory.name=u1"], "sampler.name", "'heatbath' is not supported"),
    (["theory.name=su3", "theory.action=symanzik"], "theory.action", "'symanzik'"),
    (["theory.name=su2", "theory.fermion=wilson"], "theory.fermion", "'wilson'"),
    (["sampler.fine_steps=2"], "sampler.fine_steps", "not supported with parallel.grid"),
    (["run.backend=array_api_strict"], "run.backend", "'array_api_strict' is not supported"),
])
def test_grid_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, sets, key,
                                                                 words):
    from lattice_ml.cli.main import main
    cfg = _grid_config(tmp_path / "c.toml")
    out = tmp_path / "out"
    argv = ["run", str(cfg), "--out", str(out)] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0] and words in err[0], err
    assert not out.exists()


def test_every_kind_of_key_has_a_name_in_the_reference():
    """``parallel.grid`` is the first key of kind ``ints``: the reference names it in words
    like every other kind (``_KINDS``), not by the schema's internal name."""
    from lattice_ml.cli.reference import _KINDS
    from lattice_ml.cli.schema import iter_schema
    kinds = {p.kind for *_, p in iter_schema()}
    assert "ints" in kinds and kinds <= set(_KINDS), kinds - set(_KINDS)


def test_a_measurement_that_draws_is_refused_in_a_grid_run(tmp_path, capsys, monkeypatch):
    """Rank 0 measures a grid run alone: a measurement that drew from the shared streams would
    put them out of step with the other ranks', so its streams raise on any draw; without a
    grid the same measurement runs."""
    from lattice_ml.cli import run as run_module
    from lattice_ml.cli.main import main
    build = run_module.build_job

    def drawing(config):
        job = build(config)
        plain = job.measure

        def measure(field, rng, *args):
            out = plain(field, rng, *args)
            out["noise"] = rng.uniform((field.shape[0],))
            return out
        job.measure = measure
        return job
    monkeypatch.setattr(run_module, "build_job", drawing)
    cfg = _grid_config(tmp_path / "c.toml", n=5)
    assert main(["run", str(cfg), "--out", str(tmp_path / "grid")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "drew random numbers (rng.uniform)" in err[0], err
    assert main(["run", str(cfg), "--out", str(tmp_path / "plain"),
                 "--set", "parallel.grid=[]"]) == 0


def test_a_grid_run_is_analysed_on_one_process_and_resumed_only_on_its_ranks(tmp_path, capsys):
    """The rank count is a rule of the launch, not of the file: ``analyse`` and ``config`` read
    a run made with ``grid = [2, 1]`` on one process; ``run --resume`` there is refused in one
    line naming the key, before config.toml is rewritten."""
    from lattice_ml.cli.main import main
    cfg = _grid_config(tmp_path / "c.toml", n=5)
    out = tmp_path / "a"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    toml = out / "config.toml"   # as mpiexec -n 2 with grid = [2, 1] writes it (same bits)
    toml.write_text(toml.read_text().replace("grid = [1, 1]", "grid = [2, 1]"))
    written = toml.read_text()
    assert "grid = [2, 1]" in written
    capsys.readouterr()
    assert main(["analyse", str(out)]) == 0
    assert main(["config", str(toml)]) == 0
    assert "grid = [2, 1]" in capsys.readouterr().out
    assert main(["run", "--resume", str(out), "--set", "sampler.n_samples=6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "parallel.grid" in err[0] and "needs 2 MPI rank(s)" in err[0], err
    assert toml.read_text() == written


def test_grid_on_one_process_records_the_split_and_resumes_to_the_same_bits(tmp_path):
    """``grid = [1, 1]`` on one process runs the decomposed path (the summary records grid and
    block); a run stopped at its checkpoint and extended equals the uninterrupted run bit for
    bit; resuming it without a grid is refused (other random numbers)."""
    import json

    from lattice_ml.cli.main import main
    cfg = _grid_config(tmp_path / "c.toml", n=5)
    assert main(["run", str(cfg), "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["parallel"] == {
        "ranks": 1, "grid": [1, 1], "block_shape": [8, 4], "chains_per_rank": [2]}
    assert main(["run", "--resume", str(tmp_path / "a"), "--set", "sampler.n_samples=7",
                 "--set", "parallel.grid=[1, 1]"]) == 0
    full = _grid_config(tmp_path / "f.toml", n=7)
    assert main(["run", str(full), "--out", str(tmp_path / "b")]) == 0
    _same_physics(tmp_path / "a", tmp_path / "b")
    assert main(["run", "--resume", str(tmp_path / "a"), "--set", "sampler.n_samples=9",
                 "--set", "parallel.grid=[]"]) == 2
    plain = _grid_config(tmp_path / "p.toml", n=7, grid=())
    assert main(["run", str(plain), "--out", str(tmp_path / "p")]) == 0
    hp, hb = np.load(tmp_path / "p" / "history.npz"), np.load(tmp_path / "b" / "history.npz")
    assert not np.array_equal(hp["phi2"], hb["phi2"])  # another generator: another ensemble
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["parallel"] == {
        "ranks": 1, "chains_per_rank": [2]}


@needs_mpi
@pytest.mark.slow
def test_grid_su3_on_two_ranks_equals_one_process_and_resumes_on_one(tmp_path):
    """SU(3) 4^4 HMC, ``mpiexec -n 2`` with ``grid = [2, 1, 1, 1]`` extended on one process
    with ``[1, 1, 1, 1]`` equals the one-process run made with the larger n_samples:
    history.npz (its first 5 measurements made on two ranks), the checkpoint and every summary
    entry (the unitarity deviation of both segments included) bit for bit, but the
    decomposition record, ``config.parallel.grid`` and the timings."""
    import json
    one = _grid_config(tmp_path / "one.toml", "su3", (4, 4, 4, 4), (1, 1, 1, 1), n=5)
    cli(2, "run", one, "--out", tmp_path / "two", "--set", "parallel.grid=[2, 1, 1, 1]")
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["parallel"] == {
        "ranks": 2, "grid": [2, 1, 1, 1], "block_shape": [2, 4, 4, 4], "chains_per_rank": [2, 2]}
    cli(0, "run", "--resume", tmp_path / "two", "--set", "sampler.n_samples=6",
        "--set", "parallel.grid=[1, 1, 1, 1]")
    longer = _grid_config(tmp_path / "l.toml", "su3", (4, 4, 4, 4), (1, 1, 1, 1), n=6)
    cli(0, "run", longer, "--out", tmp_path / "longer")
    _same_physics(tmp_path / "two", tmp_path / "longer")


@needs_mpi
@pytest.mark.slow
def test_grid_phi4_on_one_process_resumes_on_two_ranks_to_the_same_bits(tmp_path):
    """φ⁴ 8x4: a one-process run with ``grid = [1, 1]`` extended under ``mpiexec -n 2`` with
    ``[1, 2]`` (block 8x2: halo exchange in the short direction) equals the uninterrupted
    one-process run bit for bit; a grid for 4 ranks on 2 ends both with one error line."""
    one = _grid_config(tmp_path / "one.toml", n=5)
    cli(0, "run", one, "--out", tmp_path / "one")
    cli(2, "run", "--resume", tmp_path / "one", "--set", "sampler.n_samples=7",
        "--set", "parallel.grid=[1, 2]")
    full = _grid_config(tmp_path / "full.toml", n=7)
    cli(0, "run", full, "--out", tmp_path / "full")
    _same_physics(tmp_path / "one", tmp_path / "full")
    bad = cli(2, "run", one, "--out", tmp_path / "bad", "--set", "parallel.grid=[2, 2]",
              check=False)
    assert bad.returncode == 2, bad.stderr
    errors = [line for line in bad.stderr.splitlines() if line.startswith("lattice-ml: error")]
    assert len(errors) == 1 and "needs 4 MPI rank(s)" in errors[0], bad.stderr
    assert not (tmp_path / "bad").exists()          # refused before anything is written


def _as_before_the_grid_key(out):
    """Rewrite a finished run's ``config.toml`` and checkpoint as a version before
    ``parallel.grid`` wrote them: ``[parallel]`` holds ``chains = true`` alone."""
    import re

    from lattice_ml.io.checkpoint import load_checkpoint, save_checkpoint
    toml = out / "config.toml"
    text, n = re.subn(r"(?m)^grid = .*\n", "", toml.read_text())
    assert n == 1
    toml.write_text(text)
    path = out / "checkpoint.ckpt"
    state = load_checkpoint(path, kind="run").state
    del state["config"]["parallel"]["grid"]
    assert state["config"]["parallel"] == {"chains": True}
    save_checkpoint(path, state, kind="run")


def test_a_checkpoint_older_than_the_grid_key_resumes_without_a_grid(tmp_path, capsys):
    """A run whose config.toml and checkpoint have no ``parallel.grid`` (written before the key
    existed) is a run without a grid: it resumes and extends to the bits of a run made with
    the larger n_samples, and refuses a grid."""
    from lattice_ml.cli.main import main
    cfg = _grid_config(tmp_path / "c.toml", n=5, grid=())
    out = tmp_path / "a"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    _as_before_the_grid_key(out)
    assert main(["run", "--resume", str(out), "--set", "sampler.n_samples=7",
                 "--set", "parallel.grid=[1, 1]"]) == 2
    assert "parallel.grid ('no grid' in the checkpoint" in capsys.readouterr().err
    # unfinished (the summary and history gone: the final checkpoint resumes), then extended
    (out / "summary.json").unlink()
    (out / "history.npz").unlink()
    assert main(["run", "--resume", str(out)]) == 0
    assert main(["run", "--resume", str(out), "--set", "sampler.n_samples=7"]) == 0
    assert main(["run", str(_grid_config(tmp_path / "f.toml", n=7, grid=())),
                 "--out", str(tmp_path / "b")]) == 0
    ha, hb = np.load(out / "history.npz"), np.load(tmp_path / "b" / "history.npz")
    assert sorted(ha.files) == sorted(hb.files) and len(ha.files) >= 3
    for k in ha.files:
        np.testing.assert_array_equal(ha[k], hb[k], err_msg=k)

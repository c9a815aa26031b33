"""`record --ray` and `sweep --ray` on a local Ray instance (2 CPUs, no dashboard, no network).

One Ray instance serves the whole module (start-up takes seconds); workers import this checkout's
moeprint through the forwarded PYTHONPATH. Results are compared with single-process runs of the same
inputs, computed in this process."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO, assert_clean_error, run_cli
from evaluate_helpers import domain_texts, make_run, write_jsonl
from moeprint.cluster import DELAY_ENV, ClusterSettings, WorkerHello
from moeprint.errors import MoeprintError
from moeprint.io.atomic import atomic_directory
from moeprint.prompts import load_prompts
from moeprint.record import RecordSettings, record
from moeprint.record.distributed import _check_worker, record_on_ray, shard_dir, staging_dir
from moeprint.record.options import RecordSettings, Shard

ray = pytest.importorskip("ray")

SETTINGS = RecordSettings(max_new_tokens=4, batch_size=2, expert_norms=True)
N_PROMPTS = 12  # 6 units of 2 prompts


@pytest.fixture(scope="module")
def local_ray():
    # A short pause after each unit keeps units in flight long enough for a test to kill a worker mid-unit.
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", DELAY_ENV: "0.5"}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        object_store_memory=100 * 1024**2,
        runtime_env={"env_vars": env},
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("whole") / "run"
    return record(
        tiny_model_dir,
        load_prompts("builtin", limit=N_PROMPTS),
        out,
        RecordSettings(max_new_tokens=4, batch_size=2, expert_norms=True),
        progress=False,
    )


def run_files(run):
    """Relative path -> bytes of the run proper (manifest, prompts, traces; not .record/ bookkeeping)."""
    return {
        p.relative_to(run).as_posix(): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and ".record" not in p.parts
    }


def killer(after: int = 1):
    """An observer that kills an actor (Ray restarts it) once `after` units are done: the one that just
    finished, which the pool has already given its next unit, so a unit is cut off midway."""
    seen = {"done": 0, "killed": False, "lost": 0}

    def observe(event):
        seen[event.kind] = seen.get(event.kind, 0) + 1
        if event.kind == "done" and seen["done"] == after and not seen["killed"]:
            ray.kill(ray.get_actor(event.actor_name), no_restart=False)
            seen["killed"] = True

    return seen, observe


@pytest.mark.slow
def test_two_workers_through_the_cli_equal_the_unsharded_run(local_ray, tiny_model_dir, unsharded, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "record",
        tiny_model_dir,
        "--prompts",
        "builtin",
        "--limit",
        N_PROMPTS,
        "--batch-size",
        2,
        "--max-new-tokens",
        4,
        "--expert-norms",
        "--out",
        out,
        "--ray",
        local_ray,
        "--workers",
        2,
    )
    assert proc.returncode == 0, proc.stderr
    assert run_files(out) == run_files(unsharded)  # manifest included: byte for byte
    assert len(run_files(out)) == 2 + 6 and not staging_dir(out).exists()
    assert "tokens/s" in proc.stderr and "worker 1" in proc.stderr


@pytest.mark.slow
def test_a_killed_worker_still_ends_with_the_same_run_and_a_rerun_resumes(
    local_ray, tiny_model_dir, unsharded, tmp_path
):
    prompts = load_prompts("builtin", limit=N_PROMPTS)
    out = tmp_path / "run"
    seen, observe = killer(after=1)
    record_on_ray(tiny_model_dir, prompts, out, SETTINGS, ClusterSettings(workers=2), progress=False, observer=observe)
    assert seen["killed"] and seen["lost"] >= 1  # a unit really was cut off and redone
    assert seen["done"] == 6  # each unit counted once
    assert run_files(out) == run_files(unsharded)

    # A rerun resumes: here shard 0 of 2 is already a finished `record --shard 0/2` run in the staging
    # folder (what a driver killed after shard 0 leaves), so only shard 1's three units are recorded.
    again = tmp_path / "again"
    record(
        tiny_model_dir,
        prompts,
        shard_dir(staging_dir(again), Shard(0, 2)),
        RecordSettings(max_new_tokens=4, batch_size=2, expert_norms=True),
        shard="0/2",
        progress=False,
    )
    redone = []
    record_on_ray(
        tiny_model_dir,
        prompts,
        again,
        SETTINGS,
        ClusterSettings(workers=1),
        progress=False,
        observer=lambda e: redone.append(e.unit) if e.kind == "done" else None,
    )
    assert sorted(redone) == [1, 3, 5]  # the shard layout of the first run, whatever --workers says now
    assert run_files(again) == run_files(unsharded) and not staging_dir(again).exists()
    with pytest.raises(MoeprintError, match="already a complete run"):
        record_on_ray(tiny_model_dir, prompts, again, SETTINGS, ClusterSettings(workers=2), progress=False)


@pytest.fixture(scope="module")
def sweep_inputs(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("sweepin")
    return {
        "run": make_run(d / "run", tiny_model_dir, domain_texts(seed=1, per_domain=3)).root,
        "texts": write_jsonl(d / "texts.jsonl", domain_texts(seed=2, per_domain=2)),
    }


@pytest.mark.slow
def test_sweep_on_ray_equals_the_single_process_sweep(local_ray, sweep_inputs, tmp_path):
    from moeprint.evaluate.distributed import sweep_on_ray
    from moeprint.evaluate.sweep import SweepInputs, SweepSpec, prepare_sweep, sweep, write_sweep

    spec = SweepSpec(domains=["law", "math"], sizes="2,4", criteria=["frequency"], random_seeds=2, plots=False)
    inputs = SweepInputs(sweep_inputs["run"], sweep_inputs["texts"])
    single = sweep(inputs, spec, tmp_path / "single")
    job = prepare_sweep(inputs, spec)
    seen, observe = killer(after=1)
    cuts, n_windows = sweep_on_ray(job, ClusterSettings(workers=2), progress=False, observer=observe)
    assert seen["killed"] and seen["lost"] >= 1 and seen["done"] == len(job.plans) == 8
    distributed = write_sweep(job, cuts, n_windows, atomic_directory(tmp_path / "ray", kind="sweep"))

    a, b = (json.loads((p / "results.json").read_text()) for p in (single, distributed))
    a.pop("created"), b.pop("created")
    assert a == b and len(a["cuts"]) == 8
    assert (single / "results.csv").read_bytes() == (distributed / "results.csv").read_bytes()
    # the entries are not just copies of one another: cuts differ, and 4 of 8 experts cost perplexity
    assert len({json.dumps(c["cut"]["kept"]) for c in b["cuts"]}) > 2
    assert all(
        c["text"]["per_domain"]["law"]["ppl_cut"] != c["text"]["per_domain"]["law"]["ppl_base"] for c in b["cuts"]
    )


def test_an_unreachable_cluster_is_one_clear_line(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "record",
        tiny_model_dir,
        "--prompts",
        "builtin",
        "--limit",
        2,
        "--out",
        out,
        "--ray",
        "127.0.0.1:1",
        timeout=120,
    )
    assert_clean_error(proc)
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr
    assert not out.exists() and not staging_dir(out).exists()
    proc = run_cli("record", tiny_model_dir, "--prompts", "builtin", "--out", out, "--workers", 2)
    assert_clean_error(proc)
    assert "need --ray" in proc.stderr


def test_a_second_ray_driver_for_the_same_out_fails_at_once(tiny_model_dir, tmp_path):
    from moeprint.io.outputs import OutputLock

    out = tmp_path / "run"
    lock = OutputLock(staging_dir(out)).acquire()  # as a first `record --ray` to OUT holds it for its whole run
    try:
        proc = run_cli(
            "record", tiny_model_dir, "--prompts", "builtin", "--limit", 2, "--out", out, "--ray", "127.0.0.1:1"
        )
    finally:
        lock.release()
    assert_clean_error(proc)
    assert "another moeprint process is writing" in proc.stderr and "cannot reach" not in proc.stderr
    assert not out.exists() and not staging_dir(out).exists()


@pytest.mark.slow
def test_gpus_asked_of_a_cluster_without_gpus_is_one_clear_line(local_ray, tiny_model_dir, sweep_inputs, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "record",
        tiny_model_dir,
        "--prompts",
        "builtin",
        "--limit",
        2,
        "--out",
        out,
        "--ray",
        local_ray,
        "--gpus-per-worker",
        1,
    )
    assert_clean_error(proc)
    assert "asks for GPUs, but the Ray cluster has none" in proc.stderr
    assert not out.exists()
    proc = run_cli(
        "sweep",
        sweep_inputs["run"],
        "--texts",
        sweep_inputs["texts"],
        "--domains",
        "law",
        "--sizes",
        "4",
        "--out",
        tmp_path / "sweep",
        "--ray",
        local_ray,
        "--gpus-per-worker",
        "0.5",
    )
    assert_clean_error(proc)
    assert "asks for GPUs, but the Ray cluster has none" in proc.stderr and not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_model_is_one_clear_line(local_ray, tiny_model_dir, tmp_path):
    no_tokenizer = tmp_path / "model"
    no_tokenizer.mkdir()
    for f in ("config.json", "model.safetensors"):  # the driver never loads weights or tokenizer: workers do
        (no_tokenizer / f).write_bytes((tiny_model_dir / f).read_bytes())
    out = tmp_path / "run"
    with pytest.raises(MoeprintError, match=r"^cannot load the tokenizer from .*model"):
        record_on_ray(
            no_tokenizer, load_prompts("builtin", limit=4), out, SETTINGS, ClusterSettings(workers=1), progress=False
        )
    assert not out.exists() and not staging_dir(out).exists()  # nothing recorded: no staging left behind


def test_a_worker_seeing_other_model_files_is_refused(tmp_path):
    hello = WorkerHello("node-b", 1, "b" * 64, {"sees_shards": True, "n_batches": 3, "plan_sha256": "p"})
    with pytest.raises(MoeprintError, match=r"Ray worker 1 \(node node-b\) sees different model files .* bbbbbbbbbbbb"):
        _check_worker(1, hello, "a" * 64, "/models/m", 3, tmp_path, [])
    first: list = []
    _check_worker(0, WorkerHello("node-a", 1, "a" * 64, hello.info), "a" * 64, "/models/m", 3, tmp_path, first)
    other_plan = WorkerHello("node-c", 1, "a" * 64, dict(hello.info, plan_sha256="q"))
    with pytest.raises(MoeprintError, match="different batches"):
        _check_worker(2, other_plan, "a" * 64, "/models/m", 3, tmp_path, first)
    blind = WorkerHello("node-d", 1, "a" * 64, dict(hello.info, sees_shards=False))
    with pytest.raises(MoeprintError, match="storage every node shares"):
        _check_worker(3, blind, "a" * 64, "/models/m", 3, tmp_path, first)


def test_without_the_ray_package_the_error_names_the_extra(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    out = tmp_path / "run"
    with pytest.raises(MoeprintError, match=r"--ray needs the Ray package: pip install 'moeprint\[ray\]'"):
        record_on_ray(
            tiny_model_dir, load_prompts("builtin", limit=2), out, SETTINGS, ClusterSettings(workers=1), progress=False
        )
    assert not out.exists() and not staging_dir(out).exists()

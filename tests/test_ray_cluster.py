"""Ray beyond one node: a simulated cluster (``ray.cluster_utils.Cluster``) of a head and two worker
nodes on this machine, each a raylet with its own CPU and object store, the driver on the head.

A build and the audit's blocks spread over the nodes give the local results bit for bit; a worker
node lost mid-build leaves a complete zoo, each checkpoint once, on the nodes that remain; the index
writer and the progress counter live on the driver's node; a driver killed mid-build, or a build
stopped by a lost node with no retries left, resumes when run again, without duplicates. Starting
the cluster takes 10-20 s here, the module about 4 minutes: slow.
"""

import os
import signal
import subprocess
import sys

import pytest
import yaml

from weightspace.cli import main
from weightspace.errors import BackendError
from weightspace.parallel import RayBackend
from weightspace.zoo import Zoo
from weightspace.zoo.build import build_zoo

from .ray_helpers import (
    BLOCK,
    COUNTER,
    WRITER,
    InBackground,
    assert_same_zoo,
    audit_blocks_equal_local,
    config,
    indexed,
    long_config,
    nodes_used,
    processes,
    record_nodes,
    wait_for,
)

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

pytestmark = pytest.mark.slow

NODE = {"num_cpus": 1, "object_store_memory": 100 * 2**20}  # per node: one task at a time, a small store


class SimulatedCluster:
    def __init__(self):
        self.cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
        self.workers = [self.cluster.add_node(**NODE) for _ in range(2)]
        self.cluster.wait_for_nodes()
        self.cluster.connect()
        self.backend = RayBackend(address=self.cluster.address)

    @property
    def head(self):
        return self.cluster.head_node

    def nodes(self):
        return [self.head, *self.workers]

    def lose(self, node) -> None:
        """Kill every process of a worker node (raylet, object store, its workers), as a lost machine."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def replace(self) -> None:
        self.workers.append(self.cluster.add_node(**NODE))
        self.cluster.wait_for_nodes()

    def running(self, node, title: str = BLOCK) -> list:
        return processes(raylet_pid(node), title)

    def shutdown(self) -> None:
        ray.shutdown()
        self.cluster.shutdown()


def raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # another module's local Ray
        ray.shutdown()
    c = SimulatedCluster()
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def local_long(tmp_path_factory):
    """The 3-chunk build of the node-loss and driver-restart tests, built locally."""
    return build_zoo(long_config(chunks=3), out=tmp_path_factory.mktemp("local") / "zoo", progress=False)


def test_a_build_and_the_audit_spread_over_the_nodes_give_the_local_results(tmp_path, cluster, monkeypatch):
    record_nodes(monkeypatch, tmp_path / "build-nodes")
    cfg = config()
    cfg["population"]["runs"] = 24  # 6 chunks
    on_ray = build_zoo(cfg, out=tmp_path / "ray", progress=False, backend=cluster.backend)
    assert len(nodes_used(tmp_path / "build-nodes")) >= 2  # the chunks ran on several nodes
    assert len(on_ray) == 48 and on_ray.verify() == []
    assert_same_zoo(build_zoo(cfg, out=tmp_path / "local", progress=False), on_ray)

    record_nodes(monkeypatch, tmp_path / "audit-nodes")
    audit_blocks_equal_local(on_ray, cluster.backend)
    assert len(nodes_used(tmp_path / "audit-nodes")) >= 2


def test_the_audit_command_on_the_cluster_writes_the_local_results(tmp_path, cluster, capsys):
    train = build_zoo(config(), out=tmp_path / "train", progress=False)
    generated = build_zoo(config(chunk_size=3), out=tmp_path / "generated", progress=False)  # other dropout masks
    args = ["audit", "--train", str(train.root), "--generated", str(generated.root), "--seed", "1"]
    assert main([*args, "--out", str(tmp_path / "here")]) == 0
    assert main([*args, "--out", str(tmp_path / "cluster"), "--backend", "ray", "--address", cluster.cluster.address]) == 0
    here, there = ((tmp_path / d / "results.json").read_text() for d in ("here", "cluster"))
    assert here == there
    assert "generated" in capsys.readouterr().out


def test_a_driver_killed_mid_build_is_run_again_and_resumes_without_duplicates(tmp_path, cluster, local_long, capsys):
    cfg_file = tmp_path / "zoo.yaml"
    cfg_file.write_text(yaml.safe_dump(long_config(chunks=3)))
    root = tmp_path / "zoo"
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "weightspace.cli", "zoo", "train", str(cfg_file), "--out",
                                   str(root), "--backend", "ray", "--address", cluster.cluster.address, "--quiet"],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: indexed(root), "the first checkpoints")
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
    assert 0 < indexed(root) < 1536  # killed mid-build
    # Ray ends a dead driver's tasks; a user runs the command again once they are gone
    wait_for(lambda: not any(cluster.running(n) for n in cluster.nodes()), "the dead driver's tasks to end", every=0.5)
    resumed = build_zoo(cfg_file, out=root, progress=False, backend=cluster.backend)
    _assert_complete_once(resumed, 1536, capsys)
    assert_same_zoo(local_long, resumed)


def test_a_worker_node_lost_mid_build_leaves_a_complete_zoo(tmp_path, cluster, local_long, monkeypatch, capsys):
    record_nodes(monkeypatch, tmp_path / "nodes")
    root = tmp_path / "zoo"
    build = InBackground(lambda: build_zoo(long_config(chunks=3), out=root, progress=False, backend=cluster.backend))
    lost = cluster.workers[-1]
    # the build's actors, the index writer and the progress counter, run on the driver's node (the
    # head), never on a node that may go (Ray would put an actor that takes no CPU on any node)
    for actor in (WRITER, COUNTER):
        wait_for(lambda title=actor: cluster.running(cluster.head, title), actor)
        assert not any(cluster.running(n, actor) for n in cluster.workers)
    wait_for(lambda: cluster.running(lost) and indexed(root), "a chunk running on the node to lose, and a first write")
    at_loss = indexed(root)
    cluster.lose(lost)
    try:
        zoo = build.result()
    finally:
        cluster.replace()  # for whatever runs next
    assert 0 < at_loss < 1536
    starts = nodes_used(tmp_path / "nodes")
    assert starts[lost.node_id] >= 1 and sum(starts.values()) > 3  # a chunk ran there, and was run again
    _assert_complete_once(zoo, 1536, capsys)
    assert_same_zoo(local_long, zoo)


def test_a_node_lost_with_no_retries_left_stops_the_build_in_one_line_and_a_rerun_resumes(
        tmp_path, cluster, local_long, capsys):
    root = tmp_path / "zoo"
    no_retries = RayBackend(address=cluster.cluster.address, max_retries=0)
    build = InBackground(lambda: build_zoo(long_config(chunks=3), out=root, progress=False, backend=no_retries))
    lost = wait_for(lambda: indexed(root) and next((n for n in cluster.workers if cluster.running(n)), None),
                    "a first write, and a worker node running a chunk")
    cluster.lose(lost)
    try:
        with pytest.raises(BackendError, match=r"^block \d: its Ray worker died \(\w+\) and its 0 retries are used up; "
                                               "finished work is kept, run again to resume$"):
            build.result()
    finally:
        cluster.replace()
    assert 0 < indexed(root) < 1536
    # the build cancelled its other tasks; once they are gone the user runs it again
    wait_for(lambda: not any(cluster.running(n) for n in cluster.nodes()), "the cancelled tasks to end", every=0.5)
    resumed = build_zoo(long_config(chunks=3), out=root, progress=False, backend=cluster.backend)
    _assert_complete_once(resumed, 1536, capsys)
    assert_same_zoo(local_long, resumed)


def _assert_complete_once(zoo: Zoo, expected: int, capsys) -> None:
    """Every checkpoint indexed once with its file, no other file in models/ or .staging/, and
    ``zoo info --verify`` clean."""
    ids = list(zoo.index()["model_id"])
    files = os.listdir(zoo.root / "models")
    assert len(ids) == len(set(ids)) == expected and len(files) == expected
    assert not os.listdir(zoo.root / ".staging")
    assert zoo.verify() == []
    capsys.readouterr()
    assert main(["zoo", "info", str(zoo.root), "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"verified: {expected} checkpoints" in out and "leftover" not in out and "orphan" not in out

"""CUDA graphs (grokrun.graphs), checked on a CPU: MA's ring position on the device gives the same numbers, and
the graph bookkeeping (keys, capture on a key's second occurrence, the filter's host state, the scheduler)
replays runs exactly, with a stand-in for the CUDA calls that records the step function and replays it.

What only a GPU can check, whether torch records and replays these steps faithfully, is in
scripts/check_device.py (--cuda-graph on against off)."""

import dataclasses

import pytest
import torch

from grokrun import graphs
from grokrun.config import resolve
from grokrun.engine import Run
from grokrun.filters import EMAFilter, GradFilter, MAFilter


def feed(f, grads_per_step, amplify=True):
    """Apply filter ``f`` to each step's list of gradient tensors (copies); the filtered grads per step."""
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads_per_step[0]]
    out = []
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        f.apply(params, amplify=amplify)
        out.append([p.grad.clone() for p in params])
    return out


@pytest.mark.parametrize("warmup", [True, False])
@pytest.mark.parametrize("filter_type", ["mean", "sum"])
def test_ma_with_its_position_on_the_device_gives_the_same_numbers(warmup, filter_type):
    g = torch.Generator().manual_seed(0)
    steps = [[torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
             for _ in range(13)]  # window 4: three laps and the re-sums at their ends
    host = MAFilter(window_size=4, lamb=2.0, filter_type=filter_type, warmup=warmup)
    device = MAFilter(window_size=4, lamb=2.0, filter_type=filter_type, warmup=warmup)
    device.use_device_position()
    for a, b in zip(feed(host, steps), feed(device, steps)):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.equal(host.total[k], device.total[k]) and torch.equal(host.ring[k], device.ring[k])
               for k in host.ring)
    assert device._position.item() == 13 % 4


def test_graph_keys_say_when_a_step_can_be_replayed():
    ema = EMAFilter(0.9, 2.0)
    assert graphs.graph_key(ema, True) is None  # its first step creates the averages
    feed(ema, [[torch.ones(2)]])
    assert (graphs.graph_key(ema, True), graphs.graph_key(ema, False)) == (True, False)
    ma = MAFilter(window_size=2, lamb=1.0)
    assert graphs.graph_key(ma, True) is None  # the ring position lives on the host until asked
    ma.use_device_position()
    feed(ma, [[torch.ones(2)]])
    assert graphs.graph_key(ma, True) is None  # filling the window
    feed(ma, [[torch.ones(2)]])
    assert graphs.graph_key(ma, True) == (True, False)
    feed(ma, [[torch.ones(2)]])
    assert graphs.graph_key(ma, True) == (True, True)  # this step closes a lap: the re-sum is in its graph
    assert graphs.graph_key(GradFilter(), True) is True

    class Unknown(GradFilter):
        name = "unknown"

    assert graphs.graph_key(Unknown(), True) is None  # a filter must declare its host decisions to be captured
    assert not graphs.capturable(Unknown()) and graphs.capturable(ma)

    class Declares(Unknown):  # a plugin filter opts in by its own graph_key
        def graph_key(self, amplify):
            return amplify

    assert graphs.capturable(Declares()) and graphs.graph_key(Declares(), False) is False


class FakeGraphs(graphs.StepGraphs):
    """The CUDA calls replaced: recording keeps the step function (without running it, as a capture runs no
    kernel), a replay runs it with the filter's host state set back afterwards (a replay runs no Python)."""

    captures = 0
    seeds = 1

    def new_graph(self):
        return {}

    def record(self, graph, step_fn):
        FakeGraphs.captures += 1
        graph["fn"] = step_fn
        return torch.zeros(FakeGraphs.seeds, dtype=torch.bool)

    def replay(self, graph):
        host = graphs.host_state(self.filter)
        bad = graph.graph["fn"]()
        graphs.load_host_state(self.filter, host)
        graph.bad.copy_(bad)


SMALL = {"task": "modular", "modular.op": "add", "modular.p": 11, "modular.train_frac": 0.8, "modular.width": 16,
         "modular.layers": 1, "modular.heads": 2, "train.batch_size": 40, "train.max_steps": 60,
         "train.eval_every": 10, "dtype": "float64"}


def losses_of(cfgs, graphed, monkeypatch):
    """Weights after training ``cfgs`` together (or alone), with the step eager or through FakeGraphs."""
    if graphed:
        monkeypatch.setattr(graphs, "wanted", lambda *a: True)
        monkeypatch.setattr(graphs, "make_capturable", lambda opt: None)  # (capturable Adam needs CUDA)
        monkeypatch.setattr(graphs, "StepGraphs", FakeGraphs)
    else:
        monkeypatch.setattr(graphs, "wanted", lambda *a: False)
    run = Run(cfgs)
    assert (run.graphs is not None) == graphed
    for step in range(1, 61):
        run.step(step)
    return [p.detach().clone() for p in run.models.params], run


@pytest.mark.parametrize("filt", [{"filter.name": "ema"}, {"filter.name": "ma", "filter.window_size": 7},
                                  {"filter.name": "none"}])
@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_replayed_steps_train_exactly_as_eager_ones(filt, seeds, monkeypatch):
    # 88 training examples in batches of 40: two full batches and one of 8 per epoch, so two graph shapes
    cfg = resolve(None, {**SMALL, **filt})
    cfgs = [dataclasses.replace(cfg, seed=s) for s in seeds]
    eager, _ = losses_of(cfgs, False, monkeypatch)
    FakeGraphs.captures, FakeGraphs.seeds = 0, len(seeds)
    replayed, run = losses_of(cfgs, True, monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(eager, replayed))
    shapes = {key[0] for key in run.graphs.graphs}
    assert len(shapes) == 2 and FakeGraphs.captures == len(run.graphs.graphs)  # full and last batch, once each
    if filt["filter.name"] == "ma":  # steps before the window is full ran eagerly; laps ending were captured
        assert {key[1] for key in run.graphs.graphs} == {(True, False), (True, True)}


def test_cuda_graph_on_without_cuda_is_one_line(cli, tmp_path):
    result = cli(["train", "--cuda-graph", "on", "--device", "cpu", "--max-steps", "2", "--out", tmp_path])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --cuda-graph on needs a CUDA device (this run is on cpu); use --cuda-graph off"
    assert not any(tmp_path.iterdir())
    result = cli(["train", "--cuda-graph", "maybe", "--max-steps", "2", "--out", tmp_path])
    assert result.exit_code == 2 and "unknown cuda graph 'maybe'; choose one of: auto, on, off" in result.stderr

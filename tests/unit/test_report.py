"""report.html of sweep and comparison folders: its title, settings, figures, curves and every run linked."""

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from conftest import write_run
from grokrun import sweep_results

TINY = ["--task", "modular", "--op", "add", "--p", "11", "--width", "16", "--layers", "1", "--heads", "2",
        "--batch-size", "32", "--eval-every", "2", "--max-steps", "4", "--quiet"]


class Page(HTMLParser):
    """What a browser would show of the page: its title, headings, links, images and the runs' table rows."""

    def __init__(self, text: str):
        super().__init__()
        self.title, self.h1, self.links, self.images, self.rows, self.details_images = "", "", [], [], [], 0
        self._in, self._details = [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._in.append(tag)
        if tag == "a":
            self.links.append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs["src"])
            self.details_images += self._details
        elif tag == "tr" and "id" in attrs:
            self.rows.append(attrs["id"])
        elif tag == "details":
            self._details = True

    def handle_endtag(self, tag):
        self._in.pop()
        if tag == "details":
            self._details = False

    def handle_data(self, data):
        if self._in[-1:] == ["title"]:
            self.title += data
        elif "h1" in self._in:
            self.h1 += data


def censored_sweep(folder: Path, commands: list[str]) -> Path:
    """A sweep over the filter whose two points never reach the threshold in the same budget: two censored
    lines through the same values."""
    folder.mkdir()
    for name in ("none", "ema"):
        for frac in (0.3, 0.5):
            for seed in (0, 1):
                write_run(folder / f"filter={name}_train-frac={frac}-seed{seed}", seed=seed, filter=name,
                          val_acc=[0.0, 0.2, 0.4, 0.5], settings={"modular.train_frac": frac})
    manifest = {"task": "modular", "fixed": {"task": "modular", "train.max_steps": 300},
                "axes": [{"key": "filter.name", "name": "filter", "values": ["none", "ema"]},
                         {"key": "*.train_frac", "name": "train-frac", "values": [0.3, 0.5]}],
                "seeds": [0, 1], "threshold": 0.9, **({"commands": commands} if commands else {})}
    (folder / "sweep.json").write_text(json.dumps(manifest))
    assert sweep_results.write_outputs(folder)
    return folder


def test_a_sweeps_page_is_titled_by_its_command_and_links_every_run_to_its_figures(tmp_path):
    command = "grokrun sweep --task modular --filter none,ema --seeds 0,1 --threshold 0.9"
    folder = censored_sweep(tmp_path / "s", ["grokrun sweep --seeds 0", command])
    text = (folder / "report.html").read_text()
    page = Page(text)
    assert page.title == page.h1 == command  # the latest command; the earlier one is listed below it
    assert "grokrun sweep --seeds 0" in text and "s" != page.title
    runs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert sorted(page.rows) == runs
    for run in runs:  # the run itself and each of its figures, which exist beside it
        assert run + "/" in [link.replace("%3D", "=") for link in page.links]
        figures = [link.replace("%3D", "=") for link in page.links if link.replace("%3D", "=").startswith(run + "/")
                   and link.endswith(".png")]
        assert {Path(f).name for f in figures} == {"accuracy.png", "loss.png"}
        assert all((folder / f).is_file() for f in figures)
    # inlined, nothing fetched: the steps figure, the validation curves, and the training curves on demand
    assert len(page.images) == 3 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.details_images == 1
    assert "swept: none, ema. Gradient filter" in text and "set to 300. Budget of optimization steps" in text
    assert "http" not in text.replace("http-equiv", "")


def test_a_folder_made_before_commands_were_recorded_is_titled_by_its_name(tmp_path):
    page = Page((censored_sweep(tmp_path / "old", []) / "report.html").read_text())
    assert page.title == "grokrun sweep: old"


def test_two_censored_lines_through_the_same_values_are_both_visible(tmp_path):
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    image = imread(censored_sweep(tmp_path / "s", []) / "sweep_steps.png")[..., :3]

    def pixels(color: str) -> int:
        return int((np.abs(image - np.array(to_rgb(color))).max(-1) < 0.05).sum())

    assert pixels("C0") >= 5 and pixels("C1") >= 5  # (0 for C0 unshifted) the first line's markers are not hidden by the second's


def test_a_comparisons_page_holds_its_table_and_every_run(cli, tmp_path):
    out = tmp_path / "c"
    result = cli(["compare", *TINY, "--filter", "ema", "--seeds", "0,1", "--out", out])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.stdout
    page = Page((out / "report.html").read_text())
    assert page.title.startswith("grokrun compare --task modular") and "--filter ema" in page.title
    assert json.loads((out / "compare.json").read_text())["commands"] == [page.title]
    assert sorted(page.rows) == ["baseline-seed0", "baseline-seed1", "ema-seed0", "ema-seed1"]
    assert all(any(link == f"{run}/accuracy.png" for link in page.links) for run in page.rows)
    assert len(page.images) == 3  # comparison.png and the two curves' figures
    text = (out / "report.html").read_text()
    assert "<th>speedup (steps)</th>" in text and "<td>ema</td>" in text


def test_a_page_over_runs_elsewhere_links_each_by_its_path_from_the_page(cli, tmp_path, make_run):
    from urllib.parse import unquote

    for folder, name in (("a", "none"), ("b", "ema")):  # two runs of one name, in two folders
        make_run(tmp_path / "runs" / folder / "v-seed0", filter=name, val_acc=[0.0, 0.5, 0.9])
    result = cli(["compare", tmp_path / "runs", "--out", tmp_path / "table"])
    assert result.exit_code == 0, result.output
    page = Page((tmp_path / "table" / "report.html").read_text())
    assert sorted(page.rows) == ["../runs/a/v-seed0", "../runs/b/v-seed0"]
    figures = [unquote(link) for link in page.links if link.endswith(".png")]
    assert len(figures) == 4 and all((tmp_path / "table" / f).is_file() for f in figures)

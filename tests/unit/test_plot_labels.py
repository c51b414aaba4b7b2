"""The log axes' labels: matplotlib's own, written as plain text (superscript digits) instead of mathtext."""

from matplotlib.figure import Figure

from grokrun.plot import power_labels


def labels(ax, minor=False):
    """(x labels, y labels) as drawn, blank ones left out."""
    ax.figure.canvas.draw()
    return tuple([t.get_text() for t in axis.get_ticklabels(minor=minor) if t.get_text()]
                 for axis in (ax.xaxis, ax.yaxis))


def test_decades_and_minor_ticks_read_as_matplotlib_writes_them():
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([20, 90], [1e-7, 5])
    ax.set_xscale("log")
    ax.set_yscale("log")
    before_minor_x, _ = labels(ax, minor=True)
    _, before_y = labels(ax)
    assert before_minor_x[0] == r"$\mathdefault{2\times10^{1}}$" and r"$\mathdefault{10^{-7}}$" in before_y
    power_labels(ax)
    minor_x, _ = labels(ax, minor=True)
    _, y = labels(ax)
    assert minor_x == ["2×10¹", "3×10¹", "4×10¹", "6×10¹"]
    assert y == ["10⁻⁸", "10⁻⁷", "10⁻⁶", "10⁻⁵", "10⁻⁴", "10⁻³", "10⁻²", "10⁻¹", "10⁰", "10¹", "10²"]
    assert len(y) == len(before_y)


def test_a_linear_axis_is_left_alone_and_a_symlog_one_keeps_blank_minor_labels():
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([-100, 1000], [0, 1])
    ax.set_xscale("symlog", linthresh=1)
    formatter = ax.yaxis.get_major_formatter()
    power_labels(ax)
    assert ax.yaxis.get_major_formatter() is formatter
    x, _ = labels(ax)
    assert x == ["\u221210²", "\u221210¹", "\u221210⁰", "0", "10⁰", "10¹", "10²", "10³"]
    assert labels(ax, minor=True)[0] == []

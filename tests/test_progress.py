"""Progress bars: lively in a terminal, a line a minute in a log file (stylegan2/progress.py)."""
import io

import pytest
import tqdm
import tqdm.std

from stylegan2.progress import LOG_INTERVAL, is_terminal, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


class ClosedStream(io.StringIO):
    def isatty(self):
        raise ValueError("I/O operation on closed file")


@pytest.fixture
def clock(monkeypatch):
    """tqdm's clock under test control (seconds), and no monitor thread redrawing on the real one."""
    now = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
    return now


def redraws(stream, clock, updates=600, seconds_each=1.0, **kwargs):
    """Carriage returns written while ``updates`` steps, ``seconds_each`` apart, go by."""
    bar = progress_bar(total=updates, file=stream, **kwargs)
    for _ in range(updates):
        clock[0] += seconds_each
        bar.update(1)
    bar.close()
    return stream.getvalue().count("\r")


def test_a_log_file_gets_about_one_redraw_a_minute(clock):
    # ten simulated minutes, a step a second
    n = redraws(io.StringIO(), clock)
    assert 600 / LOG_INTERVAL <= n <= 600 / LOG_INTERVAL + 3      # a heartbeat a minute, plus start and end


def test_a_terminal_redraws_on_every_slow_step(clock):
    assert redraws(Terminal(), clock) >= 600


def test_an_explicit_interval_is_kept(clock):
    assert redraws(io.StringIO(), clock, mininterval=0.5, maxinterval=0.5) >= 600


def test_streams_that_cannot_tell_are_not_terminals():
    assert is_terminal(Terminal())
    assert not is_terminal(io.StringIO())
    assert not is_terminal(ClosedStream())
    assert not is_terminal(None)


def test_a_disabled_bar_writes_nothing(clock):
    stream = io.StringIO()
    assert redraws(stream, clock, disable=True) == 0 and stream.getvalue() == ""

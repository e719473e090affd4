"""The harness as pytest items: `pytest -p lkdevice.hil.pytest_plugin --lkd-target sim-esp32 hil/`.

Each scenario (times --lkd-repeat) becomes one test item; a scenario the target
cannot run is skipped with the reason, a failed one shows the report's reason.
Give a path with no tests of its own (hil/, say) to run only the harness's items.
"""

from __future__ import annotations

import asyncio

import pytest


def pytest_addoption(parser) -> None:
    g = parser.getgroup("lkdevice-hil")
    g.addoption("--lkd-target", metavar="T",
                help="run the HIL scenarios on this target (sim-esp32, sim-pi, esp32:PORT, pi:USER@HOST)")
    g.addoption("--lkd-scenario", action="append", metavar="NAME", help="a scenario (repeatable; default all)")
    g.addoption("--lkd-repeat", type=int, default=1, metavar="N")
    g.addoption("--lkd-profile", choices=("ci", "full"), default="ci")
    g.addoption("--lkd-report", metavar="DIR", help="also write the harness's report here")
    # the real-hardware targets' options, as `lkdevice hil run` has them (--lkd-board for --board, ...)
    from lkdevice.cli.hil import TARGET_OPTIONS
    for flag, kw in TARGET_OPTIONS:
        g.addoption("--lkd-" + flag[2:], dest="lkd_" + flag[2:].replace("-", "_"), **kw)


class HilFailure(Exception):
    pass


class _Harness:
    """One lab, one target and one event loop for the whole session."""

    def __init__(self, config) -> None:
        from . import make_target
        from .lab import Lab
        from .runner import RunResult, Runner
        from .scenario import PROFILES
        self.config = config
        self.loop = asyncio.new_event_loop()
        from lkdevice.cli.hil import TARGET_OPTIONS
        options = {f[2:].replace("-", "_"): config.getoption("lkd_" + f[2:].replace("-", "_")) for f, _ in TARGET_OPTIONS}
        self.target = make_target(config.getoption("lkd_target"), **options)
        self.lab = Lab().start()
        self.runner = Runner(self.target, self.lab, PROFILES[config.getoption("lkd_profile")],
                             repeat=config.getoption("lkd_repeat"), progress=self._progress)
        import time
        self.run = RunResult(self.target.name, self.runner.profile.name, self.runner.repeat, self.target.identity(),
                             time.time())

    def _progress(self, line: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.config.getoption("verbose") > 0:
            reporter.write_line(line)

    def close(self) -> None:
        report_dir = self.config.getoption("lkd_report")
        if report_dir:
            from . import report
            report.write(self.run, report_dir, self.lab.secrets())
        self.lab.stop()
        self.loop.close()


class HilItem(pytest.Item):
    def __init__(self, *, scenario, repeat: int, **kw):
        super().__init__(**kw)
        self.scenario = scenario
        self.repeat = repeat

    def runtest(self) -> None:
        harness: _Harness = self.config.stash[_HARNESS]
        result = harness.loop.run_until_complete(harness.runner.run_one(self.scenario, self.repeat))
        harness.run.results.append(result)
        for name, fig in result.figures.items():
            self.user_properties.append((name, fig.text()))
        if result.status == "skipped":
            pytest.skip(result.reason)
        if result.status == "failed":
            raise HilFailure(result.reason)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, HilFailure):
            harness: _Harness = self.config.stash[_HARNESS]
            r = harness.run.results[-1]
            steps = "\n".join(f"  {s.status:7} {s.name} ({s.elapsed_s:.1f} s) {s.message}" for s in r.steps)
            return f"{r.scenario}#{r.repeat} failed: {r.reason}\n{steps}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return "hil", None, f"hil {self.name}"


class HilCollector(pytest.Collector):
    def collect(self):
        from .scenarios import SCENARIOS
        names = self.config.getoption("lkd_scenario") or list(SCENARIOS)
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown:
            raise pytest.UsageError(f"unknown scenario {unknown[0]!r}; scenarios: {', '.join(SCENARIOS)}")
        for n in names:
            for r in range(1, self.config.getoption("lkd_repeat") + 1):
                yield HilItem.from_parent(self, name=f"{n}[{r}]", scenario=SCENARIOS[n], repeat=r)


_HARNESS = pytest.StashKey["_Harness"]()


def pytest_collection_modifyitems(session, config, items) -> None:
    target = config.getoption("lkd_target")
    if not target:
        return
    collector = HilCollector.from_parent(session, name=f"hil[{target}]")
    items.extend(collector.collect())


def pytest_runtestloop(session):
    # the lab starts only when there is something of ours to run (not on --collect-only)
    if session.config.getoption("lkd_target") and not session.config.option.collectonly and any(
            isinstance(i, HilItem) for i in session.items):
        try:
            session.config.stash[_HARNESS] = _Harness(session.config)
        except ValueError as e:
            raise pytest.UsageError(str(e)) from None


def pytest_unconfigure(config) -> None:
    harness = config.stash.get(_HARNESS, None)
    if harness is not None:
        harness.close()

"""pytest-slm's hooks and fixtures: each hands over to the session or a module with one job."""

from __future__ import annotations

import os
from contextlib import nullcontext
from functools import partial
from typing import Any

import pytest

from . import history, report
from .checks import outcome_baseline
from .checks.core import unjudged
from .fixtures import Accuracy, FidelityFixture, Parity, PromptSetItem, Runtime
from .matrix import Case, ParityCase, TaskSpec
from .models.handle import SlmModel
from .options import add_options, read_config
from .report.outcomes import Outcomes, colour, rollup
from .session import SlmSession

SESSION = pytest.StashKey[SlmSession]()
UNJUDGED_CATEGORY = "unjudged"  # pytest's closing line: one word, as tools parse it ("15 passed, 8 unjudged")
REPORT_LINE = pytest.StashKey[str]()  # what became of --slm-report, for the summary
HISTORY_LINE = pytest.StashKey[str]()  # what became of --slm-history
OUTCOMES = pytest.StashKey[Outcomes]()  # each item's outcome, on the controller
CASE_FIXTURE = "slm_case"
PARITY_FIXTURE = "slm_parity_case"
FIDELITY_FIXTURE = "slm_fidelity"
MODEL_FIXTURE = "slm_model"
PROMPT_SET_FIXTURE = "slm_prompt_set"
MARKERS = {
    "slm": "an item of the model x device x quant (x task) matrix (added by pytest-slm)",
    "slm_accuracy": "a task-accuracy item compared with its stored baseline",
    "slm_parity": "the same weights on llama.cpp and MLX, compared distribution by distribution",
    "slm_fidelity": "a quant's next-token distributions against the model's exact float32 values",
    "slm_runtime": "latency and memory items, compared with this machine's own baseline",
    outcome_baseline.MARKER: "a test using slm_model judged by its asserts alone, with no outcome baseline",
}
# the built-in checks' fixtures: their items keep baselines of their own, not an outcome baseline
CHECK_FIXTURES = frozenset({"slm_accuracy", "slm_runtime", FIDELITY_FIXTURE, "slm_parity", PROMPT_SET_FIXTURE})
STATUS = {  # pytest's closing line counts them by these one-word names
    outcome_baseline.KNOWN_FAILURE: ("known_failure", "K", "KNOWN FAILURE"),
    outcome_baseline.FIXED: ("fixed", "+", "FIXED"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")
    slm_config = read_config(config)
    if problem := report.output_problem(slm_config.report_dir, os.environ.get("GITHUB_STEP_SUMMARY")):
        raise pytest.UsageError(problem)
    history.configure(config, slm_config.history_path)
    config.stash[SESSION] = SlmSession.start(slm_config, partial(_progress, config))
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(), "slm-xdist")
    if not hasattr(config, "workerinput"):  # xdist forwards its workers' reports to the controller
        config.stash[OUTCOMES] = Outcomes()
        config.pluginmanager.register(OutcomeHooks(config.stash[OUTCOMES]), "slm-outcomes")


def _progress(config: pytest.Config, line: str) -> None:
    """A live line during a long step (a quantization), past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
            reporter.write_line(f"pytest-slm: {line}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Any test that asks for an slm fixture becomes one item per case of the matrix."""
    session = metafunc.config.stash[SESSION]
    if PARITY_FIXTURE in metafunc.fixturenames:
        parity = session.matrix.parity_cases()
        params = [_param(c, skip) for c, skip in parity] or [_nothing(session.matrix.empty_reason(parity=True))]
        metafunc.parametrize(PARITY_FIXTURE, params, indirect=True)
    elif CASE_FIXTURE in metafunc.fixturenames:
        with_tasks = "slm_task" in metafunc.fixturenames
        cases = session.matrix.cases(with_tasks)
        if FIDELITY_FIXTURE in metafunc.fixturenames:  # the reference is not compared with itself
            cases = [(case, skip) for case, skip in cases if case != session.matrix.reference_of(case)]
        params = [_param(c, skip) for c, skip in cases] or [
            _nothing(session.matrix.empty_reason(with_tasks=with_tasks))
        ]
        metafunc.parametrize(CASE_FIXTURE, params, indirect=True)


def _nothing(reason: str) -> Any:
    """An empty matrix says why in one line (pytest's own 'got empty parameter set' does not)."""
    return pytest.param(None, id="no-case", marks=pytest.mark.skip(reason=f"pytest-slm: {reason}"))


def _param(case: Case | ParityCase, skip: str | None) -> Any:
    marks = [pytest.mark.slm] + ([pytest.mark.skip(reason=skip)] if skip else [])
    return pytest.param(case, id=case.id, marks=marks)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Items of one (model, device, quant) run together, so each model loads once; an item that
    does not use the shared model (the load-time item, which closes it) runs first among them; a
    fidelity item runs last, since the first one loads the reference in the model's place; a
    parity item runs right after the items of its MLX side, which it then finds still loaded."""
    order: dict[str, int] = {}
    for item in items:
        case = _case_of(item)
        if isinstance(case, Case):
            order.setdefault(case.model_id, len(order))

    def rank(item: pytest.Item) -> float:
        case = _case_of(item)
        if case is None:
            return -1
        if isinstance(case, Case):
            fixtures = getattr(item, "fixturenames", ())
            shared = MODEL_FIXTURE in fixtures or PROMPT_SET_FIXTURE in fixtures
            return order[case.model_id] + (0.25 if FIDELITY_FIXTURE in fixtures else 0 if shared else -0.25)
        return order.get(case.sides[1].model_id, len(order)) + 0.5

    items.sort(key=rank)


def _case_of(item: pytest.Item) -> Case | ParityCase | None:
    params = item.callspec.params if hasattr(item, "callspec") else {}
    value = params.get(CASE_FIXTURE, params.get(PARITY_FIXTURE))
    return value if isinstance(value, (Case, ParityCase)) else None


@pytest.fixture
def slm_case(request: pytest.FixtureRequest) -> Case:
    """The combination this item runs: model, device, quant and (for task tests) task."""
    case: Case = request.param
    return case


@pytest.fixture
def slm_model(request: pytest.FixtureRequest, slm_case: Case) -> SlmModel:
    """The model of this combination, loaded once per worker and shared across its items."""
    return request.config.stash[SESSION].loader.model(slm_case)


@pytest.fixture
def slm_task(slm_case: Case) -> TaskSpec:
    assert slm_case.task is not None
    return slm_case.task


@pytest.fixture
def slm_accuracy(request: pytest.FixtureRequest, slm_case: Case, slm_task: TaskSpec) -> Accuracy:
    return Accuracy(request.config.stash[SESSION], slm_case, request.node)


@pytest.fixture
def slm_prompt_set(request: pytest.FixtureRequest, slm_case: Case) -> PromptSetItem:
    """What a `prompt_set` test calls: its samples as an accuracy item of this case."""
    return PromptSetItem(request.config.stash[SESSION], slm_case, request.node)


@pytest.fixture
def slm_fidelity(request: pytest.FixtureRequest) -> FidelityFixture:
    return FidelityFixture(request.config.stash[SESSION], request.node)


@pytest.fixture
def slm_runtime(request: pytest.FixtureRequest) -> Runtime:
    return Runtime(request.config.stash[SESSION], request.node)


@pytest.fixture
def slm_parity_case(request: pytest.FixtureRequest) -> ParityCase:
    """The model and quant, and the two runtimes' devices, this parity item compares."""
    case: ParityCase = request.param
    return case


@pytest.fixture
def slm_parity(request: pytest.FixtureRequest, slm_parity_case: ParityCase) -> Parity:
    return Parity(request.config.stash[SESSION], slm_parity_case, request.node)


def pytest_sessionfinish(session: pytest.Session) -> None:
    slm = session.config.stash[SESSION]
    slm.loader.close()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports for the run
        workeroutput["slm"] = slm.shared()
        return
    # the history first, so that the report's trend plots end with this run
    if outcome := history.append_run(session.config, slm, int(session.exitstatus)):
        session.config.stash[HISTORY_LINE], appended = outcome
        if not appended:  # like the report: the run's outcome stays visible, and the run fails
            session.exitstatus = session.exitstatus or pytest.ExitCode.TESTS_FAILED
    if slm.config.report_dir is not None:
        try:
            outcomes = session.config.stash[OUTCOMES].items()
            written = report.write_report(slm.config.report_dir, slm.results(), outcomes, slm.config.history_path)
            session.config.stash[REPORT_LINE] = f"pytest-slm report: {', '.join(map(str, written))}"
        except report.ReportError as exc:  # the run's outcome stays visible: say why, and fail it
            session.exitstatus = session.exitstatus or pytest.ExitCode.TESTS_FAILED
            session.config.stash[REPORT_LINE] = f"pytest-slm report not written, so this run fails: {exc}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A team's own test of the matrix, judged against the outcome it had at the baseline."""
    report = yield
    case = _case_of(item)
    if call.when == "call" and isinstance(case, Case) and outcome_baseline.applies(item, CHECK_FIXTURES):
        session = item.config.stash[SESSION]
        check = outcome_baseline.OutcomeCheck(case, outcome_baseline.name_of_test(item, case))
        context = session.check_context(item, lambda: session.loader.model(case).provenance, case)
        outcome_baseline.judge(report, call, check, context)
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    """An item that compared nothing is neither passed nor skipped for want of a device: counted as
    "unjudged" in pytest's own closing line (as xfailed is), shown as N / NOT JUDGED. A known failure
    and a fix have their own words too."""
    if report.skipped and unjudged(report):
        return UNJUDGED_CATEGORY, "N", "NOT JUDGED"
    if report.when == "call" and (marked := outcome_baseline.marked_outcome(report)):
        return STATUS[marked[0]]
    return None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The roll-up of every item's outcome (green only when all were judged), what changed, why
    each item not judged was not, then the tables: brief, within 120 columns; full under -v."""
    slm = config.stash[SESSION]
    if hasattr(config, "workerinput"):
        return
    outcomes, results = config.stash[OUTCOMES].items(), slm.results()
    if outcomes or any(results.values()):
        terminalreporter.section("pytest-slm summary")
        terminalreporter.write_line(rollup(outcomes), bold=True, **{colour(outcomes): True})
        for line in report.lead(outcomes, results["changed"]):
            terminalreporter.write_line(line)
        full = config.getoption("verbose") > 0
        for table in report.all_tables(results, full=full, width=None if full else report.TERMINAL_WIDTH):
            terminalreporter.write_line(table)
            terminalreporter.write_line("")
        for line in report.baseline_writes(slm.writes) if slm.writes else ():
            terminalreporter.write_line(line)
        if slm.loads:
            terminalreporter.write_line(report.model_loads(slm.loads))
    for key in (REPORT_LINE, HISTORY_LINE):  # a report or history that failed is said whatever ran
        if said := config.stash.get(key, None):
            terminalreporter.write_line(said)


class OutcomeHooks:
    """Registered on the controller only, where every item's reports arrive, its workers' included."""

    def __init__(self, outcomes: Outcomes) -> None:
        self.outcomes = outcomes

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.outcomes.add(report)


class XdistHooks:
    """Registered only with xdist present: its hooks would not validate without it."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """-n N's default distribution, but a model's items go to one worker, which loads it once.

        xdist's own `loadgroup` would do this, but on pytest 9.2 it silently stops grouping
        (pytest-xdist #1386): the scheduler is given the grouping directly instead.
        """
        if config.getvalue("dist") != "load":
            return None
        from xdist.scheduler import LoadScopeScheduling

        session = config.stash[SESSION]
        groups = {
            case.id: case.model_id for with_tasks in (True, False) for case, _ in session.matrix.cases(with_tasks)
        }

        class ModelScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist ships no types: it is Any
            def _split_scope(self, nodeid: str) -> str:
                parameters = nodeid[nodeid.rfind("[") + 1 : -1] if nodeid.endswith("]") else ""
                return groups.get(parameters, nodeid)

        return ModelScheduling(config, log)

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        node.config.stash[SESSION].absorb(getattr(node, "workeroutput", {}).get("slm", {}))

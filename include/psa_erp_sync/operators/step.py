"""``DomainStepOperator``: one flow step that calls one domain function, shaped like the posting
operator.

A flow declares *which* domain function a task runs and which datasets it touches; the operator does
the Airflow part in ``execute(context)``: it records the try's OpenLineage run, opens the hooks of
the systems the function asks for, reads the run's ids and as-of from the context, and calls the
function with explicit keyword arguments. The domain function never sees Airflow::

    DomainStepOperator(
        task_id="enforce_retention",
        call=retention.enforce_step,          # def enforce_step(conn, *, config, as_of) -> dict
        inputs=[ods("staging.raw_record")],
        outputs=[ods("staging.raw_record")],
    )

What the function receives is chosen by the names of its parameters, from this fixed set:

=================  ==============================================================
``conn``           an ODS connection (``ods_conn_id``)
``dsn``            that connection's DSN, for a step that opens its own connections
``psa``, ``erp``,  the client of that system, from its hook (``{system}_default`` or
``crm``,           ``conn_ids[system]``)
``planning``,
``sap``,
``workday``
``erp_for``        a function ``conn_id -> ERP client`` for steps that write to several ERP
                   accounts (each client opened once, on first use, closed after the step;
                   SAP's connection gives its master-data writer)
``erp_adapters``   ERP name -> posting adapter of every ERP ``config/erp_routing.yaml`` sends
                   anything to (NetSuite through ``erp``'s connection when it routes only there)
``run_id``,        the run's ids
``dag_id``
``as_of``          the run's as-of instant (:func:`~psa_erp_sync.operators.context.run_as_of`)
``scheduled``      whether the schedule started the run (not a manual or asset-triggered run)
``config``         the loaded configuration (:func:`psa_erp_sync.config.load_config`)
``params``         the run's trigger-form parameters (a plain dict)
=================  ==============================================================

and ``op_kwargs`` (templated, so it may hold XComArgs of upstream tasks), and ``pull``: keyword ->
task id whose return value the step receives, pulled from XCom at run time *without* making that
task a direct upstream (an XComArg would: it matters behind a branch). A parameter outside the set
and without a default is a mistake in the flow: the DAG fails to parse with that name.

``check_params`` runs first, before any connection is opened, on the run's trigger-form parameters;
an exception of a type in ``no_retry_on``, raised by it or by the call, fails the task at once,
without retries (a request that makes no sense does not get better by waiting).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from psa_erp_sync.operators.base import LineageReportingOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from psa_erp_sync.lineage.refs import DatasetRef

SYSTEMS = ("psa", "erp", "crm", "planning", "sap", "workday")
CONTEXT_ARGS = ("run_id", "dag_id", "as_of", "scheduled", "config", "params")
PROVIDED = frozenset({"conn", "dsn", "erp_for", "erp_adapters", *SYSTEMS, *CONTEXT_ARGS})


def _client_of(system: str, conn_id: str) -> Any:
    """The client context manager of ``system``'s hook (imported here, at run time only)."""
    from psa_erp_sync.hooks.crm import CrmHook
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.planning import PlanningHook
    from psa_erp_sync.hooks.psa import PsaHook
    from psa_erp_sync.hooks.sap import SapHook
    from psa_erp_sync.hooks.workday import WorkdayHook

    hooks: dict[str, Any] = {
        "psa": PsaHook,
        "erp": ErpHook,
        "crm": CrmHook,
        "planning": PlanningHook,
        "sap": SapHook,
        "workday": WorkdayHook,
    }
    return hooks[system](conn_id).get_client()


def _erp_factory(stack: ExitStack) -> Callable[[str], Any]:
    """``conn_id -> ERP client``: each client opened on first use and closed when ``stack`` is. The
    connection the routing file names for SAP gives SAP's master-data writer
    (:class:`~psa_erp_sync.masterdata.erp_targets.SapMasterWriter`: the same ``upsert`` call)."""
    clients: dict[str, Any] = {}

    def erp_for(conn_id: str) -> Any:
        from psa_erp_sync.routing.route import router

        if conn_id not in clients:
            routing = router().routing
            if "sap" in routing.erps and routing.connection_of("sap") == conn_id:
                from psa_erp_sync.hooks.sap import SapHook
                from psa_erp_sync.masterdata.erp_targets import SapMasterWriter

                client = stack.enter_context(_client_of("sap", conn_id))
                clients[conn_id] = SapMasterWriter(client, SapHook(conn_id).sap_mapping().company_codes)
            else:
                clients[conn_id] = stack.enter_context(_client_of("erp", conn_id))
        return clients[conn_id]

    return erp_for


def _erp_adapters(stack: ExitStack, erp_conn_id: str) -> dict[str, Any]:
    """ERP name -> posting adapter of each ERP the routing file in force sends anything to, through
    the connection it names (``erp_conn_id`` when it routes only to NetSuite)."""
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.sap import SapHook
    from psa_erp_sync.routing.route import router

    routing = router()
    erps = routing.erps_in_force()
    if erps == ["netsuite"]:
        hooks: dict[str, Any] = {"netsuite": ErpHook(erp_conn_id)}
    else:
        connection = routing.routing.connection_of
        hooks = {e: SapHook(connection(e)) if e == "sap" else ErpHook(connection(e)) for e in erps}
    return {erp: hook.adapter(stack.enter_context(hook.get_client())) for erp, hook in hooks.items()}


class DomainStepOperator(LineageReportingOperator):
    """Call one domain function with the systems and run facts it names; report its datasets.

    :param call: the domain function (plain Python; see the module docstring for its parameters).
    :param op_kwargs: further keyword arguments for ``call``. (templated)
    :param inputs: datasets the step reads.
    :param outputs: datasets the step writes.
    :param step: the step recorded with this try's OpenLineage run id (default: the task id).
    :param run_facets: builds OpenLineage run facets from the function's return value.
    :param conn_ids: connection id per system (``ods``, ``psa``, ...) when not ``{system}_default``.
    :param pull: keyword -> upstream task id whose XCom the function receives (no dependency made).
    :param check_params: checks the run's trigger-form parameters before anything is opened.
    :param no_retry_on: exception types that fail the task at once instead of being retried.
    """

    template_fields: Sequence[str] = ("op_kwargs",)
    ui_color = "#eef7ee"

    def __init__(
        self,
        *,
        call: Callable[..., Any],
        op_kwargs: Mapping[str, Any] | None = None,
        inputs: Sequence[DatasetRef] = (),
        outputs: Sequence[DatasetRef] = (),
        step: str | None = None,
        run_facets: Callable[[Any], dict[str, Any]] | None = None,
        conn_ids: Mapping[str, str] | None = None,
        pull: Mapping[str, str] | None = None,
        check_params: Callable[[dict[str, Any]], Any] | None = None,
        no_retry_on: Sequence[type[Exception]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.call = call
        self.pull = dict(pull or {})
        self.check_params = check_params
        self.no_retry_on = tuple(no_retry_on)
        self.op_kwargs = dict(op_kwargs or {})
        self.lineage_inputs = tuple(inputs)
        self.lineage_outputs = tuple(outputs)
        self.step = step
        self.run_facets_of = run_facets
        self.conn_ids = dict(conn_ids or {})
        self.ods_conn_id = self.conn_ids.get("ods", "ods_default")
        self.wanted = self._wanted_arguments(call, {*self.op_kwargs, *self.pull})
        self.result: Any = None

    @staticmethod
    def _wanted_arguments(call: Callable[..., Any], given: set[str]) -> tuple[str, ...]:
        """The provided arguments ``call`` takes; refuse one it needs that nobody provides."""
        wanted = []
        for name, parameter in inspect.signature(call).parameters.items():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or name in given:
                continue
            if name in PROVIDED:
                wanted.append(name)
            elif parameter.default is parameter.empty:
                raise TypeError(
                    f"{call.__module__}.{call.__qualname__} needs {name!r}, which the step neither"
                    f" provides ({', '.join(sorted(PROVIDED))}) nor gets in op_kwargs"
                )
        return tuple(wanted)

    def execute(self, context: Context) -> Any:
        with self._failing_at_once():
            if self.check_params is not None:
                self.check_params(dict(context.get("params") or {}))
            self.record_lineage_run(context, self.step or self.task_id)
            pulled = {name: context["ti"].xcom_pull(task_ids=task_id) for name, task_id in self.pull.items()}
            with self._arguments(context) as arguments:
                self.result = self.call(**arguments, **pulled, **self.op_kwargs)
        return self.result

    @contextmanager
    def _failing_at_once(self) -> Iterator[None]:
        """An exception of a ``no_retry_on`` type becomes ``AirflowFailException`` (no retries)."""
        try:
            yield
        except self.no_retry_on as refused:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(str(refused)) from refused

    @contextmanager
    def _arguments(self, context: Context) -> Iterator[dict[str, Any]]:
        from psa_erp_sync.operators.context import ids, is_scheduled, run_as_of

        dag_id, run_id = ids(context)
        facts: dict[str, Callable[[], Any]] = {
            "run_id": lambda: run_id,
            "dag_id": lambda: dag_id,
            "as_of": lambda: run_as_of(context),
            "scheduled": lambda: is_scheduled(context),
            "config": self._config,
            "params": lambda: dict(context.get("params") or {}),
        }
        with ExitStack() as stack:
            arguments: dict[str, Any] = {}
            for name in self.wanted:
                if name == "conn":
                    from psa_erp_sync.hooks.ods import OdsHook

                    arguments[name] = stack.enter_context(OdsHook(self.ods_conn_id).get_conn())
                elif name == "dsn":
                    from psa_erp_sync.hooks.ods import OdsHook

                    arguments[name] = OdsHook(self.ods_conn_id).dsn()
                elif name == "erp_for":
                    arguments[name] = _erp_factory(stack)
                elif name == "erp_adapters":
                    arguments[name] = _erp_adapters(stack, self.conn_ids.get("erp", "erp_default"))
                elif name in SYSTEMS:
                    conn_id = self.conn_ids.get(name, f"{name}_default")
                    arguments[name] = stack.enter_context(_client_of(name, conn_id))
                else:
                    arguments[name] = facts[name]()
            yield arguments

    @staticmethod
    def _config() -> Any:
        from psa_erp_sync.config import load_config

        return load_config()

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.lineage.refs import resolve

        return resolve(self.lineage_inputs, self.conn_ids), resolve(self.lineage_outputs, self.conn_ids)

    def lineage_run_facets(self) -> dict[str, Any]:
        if self.run_facets_of is None or self.result is None:
            return {}
        return self.run_facets_of(self.result)

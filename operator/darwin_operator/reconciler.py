"""One reconcile of one endpoint (read, plan, act, report), and the per-endpoint work queue.

`Reconciler.reconcile()` is idempotent: it reads the endpoint and its pods, asks the planner
what to do, has cluster.py do it, and writes status and events. Between calls it keeps only the
status it last handed over while that is being written (status_writer.py), and what a quiet
reconcile read.
`Controller` runs it for each endpoint on one task of its own, so events for one endpoint are
coalesced and never reconciled concurrently, while different endpoints proceed in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from darwin_operator import (
    api,
    capacity,
    metrics,
    planner,
    render,
    revisions,
    staged,
    status,
    validation,
    writes,
)
from darwin_operator.admission import Admitter, Release
from darwin_operator.cluster import ApiError, Cluster
from darwin_operator.events import NORMAL, WARNING, EventNote, Reason
from darwin_operator.logs import endpoint_log
from darwin_operator.observed import Observed, incarnations_from_pods
from darwin_operator.planner import GroupView, PlannerConfig
from darwin_operator.status_writer import StatusWriter
from darwin_operator.view import ListedView, WatchedView
from darwin_operator.vocabulary import (
    ANNOTATION_RESTARTED_AT,
    DeleteReason,
    Fault,
    GroupPhase,
    parse_time,
)
from darwin_operator.weights_step import WeightsStep

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Built:
    """What the endpoint's pods are built from: the spec and revision, and stored revisions."""

    spec: api.DarwinEndpointSpec
    revision: str
    restarted_at: str
    stored: dict[str, api.DarwinEndpointSpec]


class EndpointGone(Exception):
    """The endpoint no longer exists (or is being deleted): its worker can stop."""


class SpecRejected(Exception):
    """The API server refused an object rendered from the spec: the spec is unusable."""


class WriteRejected(Exception):
    """The API server refused a write for a reason outside the spec's own validity (Pod Security
    admission, a quota, a webhook): reported on the endpoint, then retried with the worker's
    error backoff."""


@contextlib.contextmanager
def _refusals_classified():
    """An API error on a write becomes SpecRejected when the rendered object itself is unusable
    (400, 422) or WriteRejected when a person must fix something outside the spec (Pod Security,
    a quota, RBAC); anything else (a conflict, a timeout) stays an ApiError the worker retries."""
    try:
        yield
    except ApiError as e:
        if e.status in (400, 422):
            raise SpecRejected(f"the API server rejected a rendered object: {e.message}") from e
        if e.refused:
            raise WriteRejected(f"the API server refused a write ({e.status}): {e.message}") from e
        raise


async def _every(calls: Iterable[Awaitable[Any]]) -> None:
    """Run the calls together and wait for all of them, then raise the first failure: none is
    left running behind a failed one (asyncio.gather would leave them)."""
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


async def _settled(task: asyncio.Task[Any] | None) -> None:
    """Wait for a task to end, whatever its outcome (the caller has a failure to report)."""
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None
    waiting_for_capacity: bool = False


@dataclass(frozen=True)
class _Quiet:
    """A reconcile that wrote nothing, and what it read: the same inputs before `until` (its
    next deadline) would plan the same nothing."""

    fingerprint: Any
    capacity: Any
    until: float
    result: Result


def _validate(obj: dict[str, Any]) -> api.DarwinEndpointSpec:
    """The spec, checked as the API server would (an old CRD may have let something through)."""
    without_status = {k: v for k, v in obj.items() if k != "status"}
    return validation.validate(without_status).spec


class Reconciler:
    def __init__(
        self,
        cluster: Cluster,
        config: PlannerConfig | None = None,
        clock: Callable[[], float] = time.time,
        view: ListedView | WatchedView | None = None,
        recheck_seconds: float = 300.0,
        trail_status: bool = False,
    ) -> None:
        self.cluster = cluster
        self.config = config or PlannerConfig()
        self.clock = clock
        self.view = view or ListedView(cluster)
        self.admitter = Admitter(cluster, clock, self.view)
        self.weights = WeightsStep(cluster)
        # A reconcile whose inputs did not change is skipped, but not for longer than this.
        self.recheck_seconds = recheck_seconds
        self._quiet: dict[tuple[str, str], _Quiet] = {}
        self._posting: set[asyncio.Future[Any]] = set()  # Events still being posted
        self.status_writer = StatusWriter(cluster.patch_status)
        # The status written behind the reconcile (the operator), or before it returns (tests
        # that read the status a reconcile wrote).
        self.trail_status = trail_status

    async def reconcile(self, namespace: str, name: str) -> Result:
        started = time.monotonic()
        await self.view.synced()
        key = (namespace, name)
        quiet = self._quiet.pop(key, None)
        if self.status_writer.pending(key):  # what it read then may not be what is stored
            quiet = None
        fingerprint = self.view.fingerprint(namespace, name)
        capacity = self.view.capacity_version()
        now = self.clock()
        if (
            quiet is not None
            and fingerprint is not None
            and quiet.fingerprint == fingerprint
            and (not quiet.result.waiting_for_capacity or quiet.capacity == capacity)
            and now < quiet.until
        ):
            self._quiet[key] = quiet
            metrics.RECONCILE_TOTAL.labels("unchanged").inc()
            return replace(quiet.result, requeue_after=quiet.until - now)
        try:
            result, wrote = await self._reconcile(namespace, name)
        except EndpointGone:
            metrics.RECONCILE_TOTAL.labels("gone").inc()
            self.status_writer.forget(key)
            raise
        except Exception:
            metrics.RECONCILE_TOTAL.labels("error").inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)
        metrics.RECONCILE_TOTAL.labels("success").inc()
        if fingerprint is not None and not wrote and not self.status_writer.pending(key):
            wait = self.recheck_seconds
            if result.requeue_after is not None:
                wait = min(wait, result.requeue_after)
            waiting = result.waiting_for_capacity
            self._quiet[key] = _Quiet(
                fingerprint, capacity if waiting else None, now + wait, result
            )
        return result

    async def _reconcile(self, namespace: str, name: str) -> tuple[Result, bool]:
        """The result, and whether anything was written."""
        obj = await self.view.endpoint(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            raise EndpointGone(f"{namespace}/{name}")
        meta = obj["metadata"]
        now = self.clock()
        before = self._status_of(obj)
        old = status.parse_old(before)
        try:
            spec = _validate(obj)
        except validation.InvalidEndpoint as e:
            await self._fail(obj, old, Reason.INVALID_SPEC, f"invalid spec: {e}", now)
            return Result(), True

        annotations = meta.get("annotations") or {}
        revision = render.revision_of(spec, annotations.get(ANNOTATION_RESTARTED_AT))
        ref = render.EndpointRef(name=name, namespace=namespace, uid=meta["uid"])
        observed, stored = await self._observe(ref, spec)
        restarted_at = annotations.get(ANNOTATION_RESTARTED_AT)
        plan = planner.plan(
            ref,
            spec,
            revision,
            observed,
            now,
            self.config,
            history=status.history_of(old, meta.get("generation"), restarted_at),
            rollout_in_progress=bool(old and old.rollout_started_at),
            remembered=_memory(old),
        )
        # Staged weights (model.cache.staging): staging pods first, then the plan bent around
        # where the weights are (staged.py).
        staging = await self.weights.prepare(ref, spec, revision, observed, stored, now)
        if staging is not None:
            wplan, copies = staging
            plan = staged.restrict(plan, wplan, observed, copies, staged.last_nodes(old))
        notes: list[EventNote] = []
        built = _Built(spec, revision, restarted_at or "", stored)
        rejected = ""
        admission: asyncio.Task[planner.Plan] | None = None

        def admit(release: Release | None = None) -> asyncio.Task[planner.Plan] | None:
            # Once the pods it admits exist (_execute calls this as soon as they do, or before
            # successors are created, with the `release` that creates them): gates are then
            # lifted while the Services and the budget are still being applied.
            nonlocal admission
            if plan.admissions and admission is None:
                admission = asyncio.ensure_future(self._admit(ref, spec, plan, notes, release))
            return admission

        try:
            try:
                await self._execute(ref, built, plan, notes, now, admit)
            except SpecRejected as e:
                await _settled(admission)
                await self._fail(obj, old, Reason.INVALID_SPEC, str(e), now)
                return Result(), True
            except WriteRejected as e:
                rejected = str(e)  # reported below; nothing that exists is touched because of it
            except Exception:
                await _settled(admission)  # the worker retries: no admission left behind
                raise
            admit()
            if admission is not None:
                plan = await admission
        finally:
            if admission is not None and not admission.done():  # cancelled: so is admission
                admission.cancel()
        if staging is not None:
            plan = staged.settle(plan, wplan)
        views = list(plan.groups)

        new = status.compute(
            name=name,
            namespace=namespace,
            generation=meta.get("generation"),
            spec=spec,
            revision=revision,
            views=views,
            old=old,
            now=now,
            blocked_reason=plan.blocked_reason,
            history=plan.health,
            decision=plan.rollout,
            rejected=rejected,
        )
        if staging is not None:
            notes.extend(staged.report(new, old, wplan, observed, now))
        # staged weights read and write more than this plan shows: never skipped
        wrote = bool(plan.actions or plan.admissions) or staging is not None
        if await self._write_status(obj, before, new):
            wrote = True
        notes.extend(status.transitions(old, new, now))
        self._post_events(obj, notes, now)
        _record_metrics(namespace, name, spec, revision, observed, views, old, new, now)
        if rejected:
            raise WriteRejected(rejected)  # the worker retries with its error backoff
        waiting = any(
            v.phase in (GroupPhase.WAITING_FOR_CAPACITY, GroupPhase.DOWNLOADING) for v in views
        )
        requeue = plan.requeue_after
        if staging is not None:
            ahead = [d - now for d in wplan.deadlines if d > now]
            requeue = min([requeue, *ahead] if requeue is not None else ahead, default=None)
        result = Result(requeue_after=requeue, waiting_for_capacity=waiting)
        return result, wrote or bool(notes) or observed.secret_missing

    def _status_of(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The endpoint's status as this process last made it (handed over, maybe not landed)."""
        meta = obj["metadata"]
        handed = self.status_writer.latest((meta["namespace"], meta["name"]), meta["uid"])
        return handed if handed is not None else obj.get("status")

    async def _write_status(
        self,
        obj: dict[str, Any],
        before: dict[str, Any] | None,
        new: api.DarwinEndpointStatus,
        trail: bool = True,
    ) -> bool:
        """Write the status if it changed, or if its last write failed; whether it did. The
        write trails the reconcile (status_writer.py) when `trail_status` allows it, except
        when it changes what the status remembers (status.remembered), and after a failed
        write: a failure then is this reconcile's."""
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        failed = self.status_writer.failed(key)
        old = status.parse_old(before)
        if not failed and not status.changed(old, new):
            return False
        wait = (
            failed
            or not (trail and self.trail_status)
            or status.remembered(new) != status.remembered(old)
        )
        landed = self.status_writer.hand_over(key, meta["uid"], status.to_wire(new), awaited=wait)
        if wait:
            await asyncio.shield(landed)
        return True

    def _post_events(self, obj: dict[str, Any], notes: list[EventNote], now: float) -> None:
        """Events are best effort and go last in the API pool: the endpoint's next reconcile
        does not wait for them (a rollout step would, for each step's Events)."""
        if not notes:
            return
        posting = asyncio.gather(*(self._post_event(obj, note, now) for note in notes))
        self._posting.add(posting)
        posting.add_done_callback(self._posting.discard)

    async def _post_event(self, obj: dict[str, Any], note: EventNote, now: float) -> None:
        """Post one Event; a failure is logged with the endpoint and fails nothing."""
        try:
            await self.cluster.post_event(obj, note, now)
        except Exception as error:  # an operator that stops cancels these: not logged
            meta = obj["metadata"]
            endpoint_log(log, meta["namespace"], meta["name"]).warning(
                "could not post events: %s (%s)", error, note.reason.value
            )

    async def events_posted(self) -> None:
        """Once the Events of every reconcile so far are posted (or failed)."""
        while self._posting:
            await asyncio.gather(*self._posting, return_exceptions=True)

    async def _observe(
        self, ref: render.EndpointRef, spec: api.DarwinEndpointSpec
    ) -> tuple[Observed, dict[str, api.DarwinEndpointSpec]]:
        """What the cluster holds, and the specs of the stored revisions by revision."""
        secret = spec.model.token_secret_ref
        pods, owned_hashes, secret_found, kept = await asyncio.gather(
            self.view.endpoint_pods(ref.namespace, ref.name),
            self.view.owned_hashes(ref.namespace, ref.name, ref.uid),
            self.cluster.secret_exists(ref.namespace, secret.name) if secret else _true(),
            self.view.stored_revisions(ref.namespace, ref.name),
        )
        readable = [r for o in kept or () if (r := revisions.from_api(o, ref.uid)) is not None]
        groups, leaving = incarnations_from_pods(pods, ref.uid)
        # Nodes only matter for pods placed on them (health: a lost node breaks its groups).
        nodes = None
        if any(p.bound for g in groups for p in g.pods):
            nodes = await self.view.nodes_holding([p for g in groups for p in g.pods])
        observed = Observed(
            groups=groups,
            leaving=leaving,
            owned_objects=owned_hashes,
            secret_missing=secret_found is False,
            nodes=nodes,
            revisions=None if kept is None else tuple(r for r, _ in readable),
        )
        return observed, {r.revision: s for r, s in readable}

    async def _execute(
        self,
        ref: render.EndpointRef,
        built: _Built,
        plan: planner.Plan,
        notes: list[EventNote],
        now: float,
        admit: Callable[[Release | None], asyncio.Task[planner.Plan] | None],
    ) -> None:
        """Do the plan's actions. `admit` starts the admission of the plan's gated groups, once
        their pods all exist (or would, had their creation not failed), or, when successors are
        to be created, before: those are created admitted, or gated if they do not fit."""
        ns, spec = ref.namespace, built.spec

        async def run(action: planner.Action, held: Mapping[str, str] | None = None) -> None:
            endpoint_log(log, ns, ref.name).info("%s", _describe(action, admitted=held is not None))
            match action:
                case planner.ApplyObject(body=body):
                    return await self.cluster.apply(body)
                case planner.StoreRevision(revision=revision, number=number):
                    kept = revisions.render_revision(
                        ref, spec, revision, built.restarted_at, number
                    )
                    return await self.cluster.store_revision(kept)
                case planner.PruneRevision(name=name):
                    return await self.cluster.prune_revision(ns, name)
            # A drain is timed from its write, not from the start of the reconcile; an admission
            # (its scheduling timeout) from its decision.
            timed = isinstance(action, planner.DrainGroup) or held is not None
            at = self.clock() if timed else now
            pod_writes = writes.of(action, ref, spec, built.revision, at, built.stored)
            if held is not None:  # admitted before it exists: created with its gates lifted
                pod_writes = writes.created_admitted(pod_writes, at, held)
            done = await self.cluster.write_pods(ns, pod_writes.first)
            if pod_writes.last:
                done = await self.cluster.write_pods(ns, pod_writes.last)
            match action:
                case planner.CreateGroup(index=index, gated=gated) if done:
                    how = "admitted" if held is not None else "gated" if gated else "ungated"
                    notes.append(
                        EventNote(
                            NORMAL,
                            Reason.GROUP_CREATED,
                            f"group {index}: created {done} of {len(pod_writes.first)} pods "
                            f"({how})",
                        )
                    )
                case planner.DrainGroup(index=index):
                    notes.append(
                        EventNote(
                            NORMAL,
                            Reason.GROUP_DRAINING,
                            f"group {index}: leader left the Service; deleted after "
                            f"drainSeconds ({spec.rollout.drain_seconds}s) if it was serving",
                        )
                    )
                case planner.DeleteGroup(index=index, reason=reason) if done:
                    if reason != DeleteReason.UNFINISHED_DELETE:
                        _note_delete(notes, index, reason, plan, ref)

        # Services, the PDB and the update revision's spec are written together with the pods
        # of new groups: those pods need none of them to exist (gated, they wait for admission
        # below; DNS and the Services' endpoints follow whenever both exist; a revision not
        # stored yet is stored by the next reconcile). Waiting for them would put one Service
        # apply (the slowest write, a ClusterIP to allocate) before every endpoint's first pod.
        # Drains and deletions come after, so the budget counts a drain before it starts. A
        # successor's pods are created once the incarnation it replaces is being deleted (and
        # out of the Service): an index never shows two live incarnations, not even briefly.
        # Admission starts once the new groups' pods exist, unless successors are to be created:
        # then it is asked first, and a successor that fits is created with its gates lifted
        # (the write that lifts them would be one more round trip on every rollout step).
        first = (planner.ApplyObject, planner.StoreRevision)
        deleted = {a.index for a in plan.actions if isinstance(a, planner.DeleteGroup)}
        successors = [
            a for a in plan.actions if isinstance(a, planner.CreateGroup) and a.index in deleted
        ]
        new_groups = [
            a for a in plan.actions if isinstance(a, planner.CreateGroup) and a not in successors
        ]
        alongside = [a for a in plan.actions if isinstance(a, first)]
        others = [
            a
            for a in plan.actions
            if not isinstance(a, first) and not isinstance(a, planner.CreateGroup)
        ]

        async def new_groups_then_admission() -> None:
            await _every(run(a) for a in new_groups)
            if not successors:
                admit(None)

        async def successors_admitted_first() -> None:
            waiting = {a.index: a for a in successors if a.gated}
            failures: list[Exception] = []

            async def release(
                admission: planner.Admission, fit: capacity.Fit
            ) -> capacity.Fit | None:
                successor = waiting.pop(admission.index, None)
                if successor is None:  # a group whose pods exist
                    return await self.admitter.lift_gates(ref, admission, fit)
                try:
                    await run(successor, dict(zip(admission.pods, fit.nodes, strict=True)))
                except Exception as e:  # reported with the creations below, not as admission's
                    failures.append(e)
                    await self._undo_creation(ref, admission)
                    return capacity.Fit(False, (), "its pods could not all be created; retried")
                return None

            admission = admit(release) if waiting else None
            if admission is not None:
                try:
                    await admission
                except Exception as e:  # the successors not admitted are still created, gated
                    failures.append(e)
            await _every(run(a) for a in successors if a.index in waiting or not a.gated)
            if failures:
                raise failures[0]

        with _refusals_classified():
            await _every([*(run(a) for a in alongside), new_groups_then_admission()])
            await _every(run(a) for a in others)
            await successors_admitted_first()
        admit(None)

    async def _undo_creation(self, ref: render.EndpointRef, admission: planner.Admission) -> None:
        """An admitted group whose creation failed part way goes again, whole: its pods were
        let go on creation, and a group is never left half placed."""
        endpoint_log(log, ref.namespace, ref.name).warning(
            "group %d: creation failed part way; deleting what was created", admission.index
        )
        undo = writes.deletion(admission.pods, admission.pods[0], DeleteReason.INCOMPLETE)
        await self.cluster.write_pods(ref.namespace, undo.first)
        await self.cluster.write_pods(ref.namespace, undo.last)

    async def _admit(
        self,
        ref: render.EndpointRef,
        spec: api.DarwinEndpointSpec,
        plan: planner.Plan,
        notes: list[EventNote],
        release: Release | None,
    ) -> planner.Plan:
        """Ask for the plan's admissions (those that fit are let go: admission.py) and finish
        the plan with the answers (its last stage)."""
        resource = spec.placement.gpu_resource
        fits = await self.admitter.admit(ref, resource, plan.admissions, release)
        for admission, fit in zip(plan.admissions, fits, strict=True):
            endpoint_log(log, ref.namespace, ref.name).log(
                logging.INFO if fit.fits else logging.DEBUG,  # waiting repeats every resync
                "group %d %s: %s",
                admission.index,
                "admitted" if fit.fits else "waits",
                fit.message,
            )
            if fit.fits:
                notes.append(
                    EventNote(
                        NORMAL,
                        Reason.GROUP_ADMITTED,
                        f"group {admission.index}: gates lifted; {fit.message}",
                    )
                )
        return planner.admitted(plan, fits)

    async def _fail(
        self,
        obj: dict[str, Any],
        old: api.DarwinEndpointStatus | None,
        reason: Reason,
        message: str,
        now: float,
    ) -> None:
        meta = obj["metadata"]
        new = status.failed(
            name=meta["name"],
            generation=meta.get("generation"),
            old=old,
            reason=reason,
            message=message,
            now=now,
        )
        await self._write_status(obj, self._status_of(obj), new, trail=False)
        metrics.set_endpoint_phase(meta["namespace"], meta["name"], new.phase)
        self._post_events(obj, status.transitions(old, new), now)


def _describe(action: planner.Action, admitted: bool = False) -> str:
    match action:
        case planner.ApplyObject(key=key):
            return f"apply {key}"
        case planner.CreateGroup(index=index, gated=gated, revision=older, incarnation=n):
            on = f" on revision {older}" if older else ""
            how = " (admitted)" if admitted else " (gated)" if gated else ""
            return f"create group {index} incarnation {n}{on}{how}"
        case planner.UngateGroup(index=index):
            return f"finish lifting the gates of group {index}"
        case planner.DrainGroup(index=index):
            return f"drain group {index}"
        case planner.RestoreServing(index=index):
            return f"put group {index} back behind the Service"
        case planner.MarkBroken(index=index, mark=mark):
            return f"group {index} is broken, to be recreated: {mark}"
        case planner.DeleteGroup(index=index, reason=reason):
            return f"delete group {index} ({reason.value})"
        case planner.StoreRevision(revision=revision):
            return f"store revision {revision}"
        case planner.PruneRevision(name=name):
            return f"prune stored revision {name}"
    return repr(action)


def _note_delete(
    notes: list[EventNote],
    index: int,
    reason: DeleteReason,
    plan: planner.Plan,
    ref: render.EndpointRef,
) -> None:
    view = next((v for v in plan.groups if v.index == index), None)
    detail = f": {view.message}" if view and view.message else ""
    if reason == DeleteReason.SCHEDULING_TIMEOUT:
        notes.append(EventNote(WARNING, Reason.SCHEDULING_TIMEOUT, f"group {index}{detail}"))
    elif reason == DeleteReason.ROLLOUT:
        notes.append(EventNote(NORMAL, Reason.GROUP_REPLACED, f"group {index}{detail}"))
    else:
        notes.append(
            EventNote(NORMAL, Reason.GROUP_DELETED, f"group {index} deleted ({reason.value})")
        )
    if reason not in _NOT_RECREATIONS:
        metrics.GROUP_RECREATIONS.labels(ref.namespace, ref.name, reason.value).inc()


def _record_metrics(
    namespace: str,
    name: str,
    spec: api.DarwinEndpointSpec,
    revision: str,
    observed: Observed,
    views: list[GroupView],
    old: api.DarwinEndpointStatus | None,
    new: api.DarwinEndpointStatus,
    now: float,
) -> None:
    states = {
        "desired": spec.replicas,
        "current": new.replicas,
        "ready": new.ready_replicas,
        "updated": new.updated_replicas,
        "available": new.available_replicas,
    }
    for state, value in states.items():
        metrics.ENDPOINT_REPLICAS.labels(namespace, name, state).set(value)
    metrics.set_endpoint_phase(namespace, name, new.phase)
    metrics.set_group_phases(namespace, name, {v.index: v.phase.value for v in views})
    metrics.init_recreations(
        namespace,
        name,
        [
            *(r.value for r in DeleteReason if r not in _NOT_RECREATIONS),
            *(f.value for f in Fault),
        ],
    )
    # Recreations of broken groups, by fault: counted once, when the status first holds them.
    before = {g.index: g for g in (old.groups if old else [])}
    for g in new.groups:
        for reason in status.new_recreations(before.get(g.index), g):
            metrics.GROUP_RECREATIONS.labels(namespace, name, reason).inc()
    # GPUs from the pods themselves: a broken or terminating group still holds its GPUs.
    resource = spec.placement.gpu_resource
    ready_groups = {v.index for v in views if v.phase == GroupPhase.READY}
    requested = ready = 0
    for g in observed.groups:
        held = sum(p.requests(resource) for p in g.pods if p.bound and not p.terminal)
        requested += held
        ready += held if g.index in ready_groups else 0
    for g in observed.leaving:
        requested += sum(p.requests(resource) for p in g.pods if p.bound and not p.terminal)
    metrics.GPUS.labels(namespace, name, "requested").set(requested)
    metrics.GPUS.labels(namespace, name, "ready").set(ready)
    # The rollout's start is kept in the status, so its duration survives operator restarts.
    metrics.ROLLOUT_IN_PROGRESS.labels(namespace, name).set(1 if new.rollout_started_at else 0)
    began = parse_time(old.rollout_started_at) if old and old.rollout_started_at else None
    if began is not None and not new.rollout_started_at and old.update_revision == revision:
        metrics.ROLLOUT_DURATION.observe(max(0.0, now - began))
    metrics.ROLLOUT_PAUSED.labels(namespace, name).set(1 if spec.rollout.paused else 0)
    was = {g.index: g.phase for g in (old.groups if old else [])}
    for v in views:
        group = observed.group(v.index)
        if group is not None and group.incarnation != v.incarnation:
            group = None  # replaced in this reconcile: its successor has no pods yet
        just_admitted = (
            v.phase == GroupPhase.SCHEDULING
            and group is not None
            and all(p.gated for p in group.pods)
        )
        durations = metrics.startup_durations(
            was.get(v.index), v.phase.value, group, now if just_admitted else None
        )
        metrics.observe_startup(namespace, name, durations)


# Deletions that do not count as recreations: the group is not wanted, or is already going.
# (BROKEN: counted by the fault that broke the group, see above.)
_NOT_RECREATIONS = (
    DeleteReason.SCALE_DOWN,
    DeleteReason.ROLLOUT,  # planned: replaced by a new revision
    DeleteReason.UNFINISHED_DELETE,
    DeleteReason.BROKEN,
)


def _memory(old: api.DarwinEndpointStatus | None) -> dict[int, planner.GroupMemory]:
    return {
        g.index: planner.GroupMemory(g.revision, g.phase, g.pods, g.whole_incarnation)
        for g in (old.groups if old else ())
    }


async def _true() -> bool:
    return True


class Controller:
    """One worker task per endpoint: runs reconcile when triggered, on requeue and on resync."""

    def __init__(
        self,
        reconcile: Callable[[str, str], Awaitable[Result]],
        *,
        resync_seconds: float = 30.0,
        debounce_seconds: float = 0.02,
        error_backoff: tuple[float, ...] = (1, 2, 5, 10, 30),
    ) -> None:
        self._reconcile = reconcile
        self.resync = resync_seconds
        self.debounce = debounce_seconds
        self.error_backoff = error_backoff
        self._dirty: dict[tuple[str, str], asyncio.Event] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._waiting: set[tuple[str, str]] = set()
        self._halted = False

    def trigger(self, namespace: str, name: str) -> None:
        if self._halted:  # stopping: kopf may still deliver events until its watches close
            return
        key = (namespace, name)
        if key not in self._tasks:
            self._dirty[key] = asyncio.Event()
            self._tasks[key] = asyncio.create_task(self._worker(key), name=f"reconcile {key}")
        self._dirty[key].set()

    def trigger_waiting(self) -> None:
        """GPUs were freed somewhere: endpoints waiting for capacity should look again."""
        for key in list(self._waiting):
            self.trigger(*key)

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        task = self._tasks.pop(key, None)
        self._dirty.pop(key, None)
        self._waiting.discard(key)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        metrics.forget_endpoint(namespace, name)

    @property
    def endpoints(self) -> list[tuple[str, str]]:
        return list(self._tasks)

    def halt(self) -> None:
        """Abandon every reconcile now and start no new one (the operator is stopping). A
        reconcile cut short is safe: the next one, here or in another replica, starts from
        what the cluster says."""
        self._halted = True
        for task in self._tasks.values():
            task.cancel()

    async def stop(self) -> None:
        self.halt()
        tasks = list(self._tasks.values())
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._dirty.clear()

    async def _worker(self, key: tuple[str, str]) -> None:
        failures = 0
        delay: float | None = 0.0
        dirty = self._dirty[key]
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dirty.wait(), timeout=delay)
            await asyncio.sleep(self.debounce)  # let a burst of pod events land in one run
            dirty.clear()
            try:
                result = await self._reconcile(*key)
            except EndpointGone:
                endpoint_log(log, *key).info("endpoint is gone")
                self.forget(*key)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                delay = self.error_backoff[min(failures, len(self.error_backoff) - 1)]
                failures += 1
                endpoint_log(log, *key).warning("reconcile failed (retry in %ss): %s", delay, e)
                endpoint_log(log, *key).debug("reconcile failure", exc_info=True)
                continue
            failures = 0
            if result.waiting_for_capacity:
                self._waiting.add(key)
            else:
                self._waiting.discard(key)
            requeue = result.requeue_after
            delay = self.resync if requeue is None else max(0.05, min(requeue, self.resync))

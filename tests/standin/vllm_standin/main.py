"""`vllm serve` of the stand-in: rendezvous, load, serve, die and shut down as vLLM 0.33.0 does.

    rank 0 (or a single node): [wait for every rank] -> load -> [wait until every rank loaded]
                               -> listen on --host:--port (nothing listens before)
    rank > 0 (--headless):     join the leader -> load -> tell the leader -> hold on until the
                               leader goes away (then exit 1, as vLLM's workers fail)

The engine dies when a rank is lost or a crash is injected: /health answers 503, then the process
exits 1 (unless VLLM_KEEP_ALIVE_ON_ENGINE_DEATH=1). SIGTERM: with --shutdown-timeout > 0 new
requests get 503 while those in flight finish, for at most that long (/health stays 200, as
vLLM's only reports a dead engine); without it in-flight requests are aborted. Either way the
process then exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from vllm_standin import VERSION, cli, faults, http_api, loader, log, rendezvous
from vllm_standin.engine import Engine
from vllm_standin.faults import Fault
from vllm_standin.knobs import Knobs
from vllm_standin.metrics import Metrics

# torch.distributed's default process-group timeout, used when vLLM passes none.
DEFAULT_DISTRIBUTED_TIMEOUT = 600.0


class Serve:
    def __init__(self, args: argparse.Namespace, knobs: Knobs):
        self.args, self.knobs = args, knobs
        self.nnodes = args.nnodes or 1
        self.rank = args.node_rank or 0
        self.served_names = list(args.served_model_name or [args.model])
        # vLLM takes --max-model-len as text ("18k" too); the stand-in only reports plain numbers.
        self.max_model_len = int(args.max_model_len) if str(args.max_model_len).isdigit() else None
        self.engine = Engine(Metrics(self.served_names[0], self.max_model_len))
        self.server: http_api.Server | None = None
        self.leader: rendezvous.Leader | None = None
        self.worker: rendezvous.Worker | None = None
        self.loaded = threading.Event()
        self.extra_load_seconds = knobs.load_extra_seconds
        self.deferred: list[Fault] = []  # faults from the environment, applied once loaded
        self.terminating = False
        self.exit_code: int | None = None
        self.done = threading.Event()
        self.lock = threading.Lock()

    # --- the process's end ---------------------------------------------------------------
    def finish(self, code: int, why: str) -> None:
        with self.lock:
            if self.exit_code is not None:
                return
            self.exit_code = code
        (log.info if code == 0 else log.error)(f"exiting with {code}: {why}")
        self.done.set()

    def engine_died(self, reason: str) -> None:
        if not self.engine.die(reason):
            return
        if self.server is None:
            self.finish(1, reason)
        elif self.knobs.keep_alive_on_engine_death:
            log.warning("VLLM_KEEP_ALIVE_ON_ENGINE_DEATH=1: the server stays up, /health 503")
        else:
            timer = threading.Timer(self.knobs.death_exit_seconds, self.finish, (1, reason))
            timer.daemon = True
            timer.start()

    def on_signal(self, signum: int, _frame) -> None:
        if self.engine.frozen or self.terminating:
            return
        self.terminating = True
        threading.Thread(target=self._shutdown, args=(signal.Signals(signum).name,)).start()

    def _shutdown(self, name: str) -> None:
        timeout = float(getattr(self.args, "shutdown_timeout", 0) or 0)
        if self.server is not None and timeout > 0 and self.engine.dead_reason is None:
            log.info(
                f"{name}: draining {self.engine.in_flight} in-flight requests "
                f"for up to {timeout:g} s (--shutdown-timeout)"
            )
            self.engine.drain()
            if not self.engine.wait_idle(timeout):
                log.warning(f"aborting {self.engine.in_flight} requests still in flight")
        elif self.engine.in_flight:
            log.warning(f"{name}: aborting {self.engine.in_flight} in-flight requests")
        self.finish(0, name)

    # --- faults ----------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        log.warning(f"fault injected: {fault.kind}{'' if fault.value is None else fault.value}")
        if fault.kind == "slow-load":
            self.extra_load_seconds += 30.0 if fault.value is None else fault.value
        elif fault.kind == "exit":
            self.finish(int(1 if fault.value is None else fault.value), "fault: exit")
        elif fault.kind == "oom":
            cap = self.knobs.oom_cap_mb

            def on_cap() -> None:
                self.finish(1, f"fault oom: allocated {cap:g} MB and was not killed (no limit?)")

            threading.Thread(
                target=faults.allocate_until_killed, args=(cap, on_cap), daemon=True
            ).start()
        elif self.worker is not None:  # a worker's fault reaches its leader's engine
            if fault.kind == "crash":
                self.finish(1, "fault: crash")
                return
            if fault.kind == "freeze":
                self.engine.freeze()
            else:
                self.engine.hang("fault: hang")
            self.worker.send({"hung": True})  # a stuck rank stalls every collective
        elif fault.kind == "freeze":
            self.engine.freeze()
        elif fault.kind == "crash":
            self.engine_died("fault: crash")
        else:
            self.engine.hang("fault: hang")

    # --- start-up --------------------------------------------------------------------------
    def _distributed_timeout(self) -> float:
        value = getattr(self.args, "distributed_timeout_seconds", None)
        return float(value) if value else DEFAULT_DISTRIBUTED_TIMEOUT

    def _on_rank_event(self, kind: str, rank: int) -> None:
        if kind == "hung":
            self.engine.hang(f"rank {rank} hung")
        elif not self.terminating:
            self.engine_died(f"rank {rank} disconnected (its process died)")

    def _load(self) -> None:
        directory = loader.model_dir(self.args.model, self.args.download_dir, self.args.revision)
        files = loader.model_files(directory)
        log.info(f"Loading weights of {self.args.model} from {directory} ({len(files)} files)")
        size, seconds = loader.read_all(
            files, self.knobs.load_bytes_per_second, lambda: self.extra_load_seconds
        )
        log.info(
            f"Model loading took {size / 2**30:.4f} GiB ({size} bytes) and {seconds:.2f} seconds"
        )

    def _start(self) -> None:
        args = self.args
        try:
            if self.nnodes > 1:
                timeout = self._distributed_timeout()
                if self.rank == 0:
                    self.leader = rendezvous.Leader(
                        args.master_addr,
                        args.master_port,
                        self.nnodes,
                        timeout,
                        self._on_rank_event,
                    )
                    log.info(f"waiting for {self.nnodes - 1} ranks on port {args.master_port}")
                    self.leader.gather()
                else:
                    self.worker = rendezvous.Worker(
                        args.master_addr, args.master_port, self.rank, self.nnodes, timeout
                    )
                    self.worker.join()
                log.info(f"rank {self.rank}: all {self.nnodes} ranks joined")
            self._load()
            if self.worker is not None:
                self.worker.send({"loaded": True})
                self._loaded()
                self.worker.wait_until_leader_gone()
                if not self.terminating:
                    self.finish(1, "the leader went away (rank 0 closed the connection)")
                return
            if self.leader is not None:
                self.leader.wait_loaded(self.knobs.engine_ready_timeout)
            if self.engine.dead_reason is not None:
                return
            host = args.host or "0.0.0.0"
            api = http_api.Api(
                self.engine,
                args.model,
                self.served_names,
                self.max_model_len,
                self.knobs.request_seconds,
                self.knobs.hostname,
            )
            self.server = http_api.start(host, args.port, api)
            log.info(f"Starting vLLM API server 0 on http://{host}:{args.port}")
            self._loaded()
        except (rendezvous.RendezvousError, loader.ModelNotFound, OSError) as e:
            self.finish(1, f"{type(e).__name__}: {e}")

    def _loaded(self) -> None:
        self.loaded.set()
        for fault in self.deferred:
            self.inject(fault)

    def run(self) -> int:
        log.info(f"vLLM API server version {VERSION} (the stand-in of darwin-operator's tests)")
        log.info(f"rank {self.rank} of {self.nnodes}; serving {self.served_names}")
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.on_signal)
        if self.knobs.fault:
            fault = Fault.parse(self.knobs.fault)
            if fault.kind == "slow-load":
                self.inject(fault)
            else:
                self.deferred.append(fault)
        faults.watch(self.knobs.fault_file, self.inject)
        threading.Thread(target=self._start, name="start", daemon=True).start()
        while not self.done.wait(0.5):
            pass
        return self.exit_code or 0


def main(argv: list[str] | None = None) -> int:
    args = cli.parse(sys.argv[1:] if argv is None else argv)
    try:
        knobs = Knobs.from_env()
        if knobs.fault:
            Fault.parse(knobs.fault)
    except ValueError as e:
        print(f"vllm-standin: {e}", file=sys.stderr)
        return 2
    code = Serve(args, knobs).run()
    sys.stdout.flush()
    os._exit(code)  # threads blocked in requests or sockets must not hold the exit


if __name__ == "__main__":
    sys.exit(main())

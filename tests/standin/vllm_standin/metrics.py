"""vLLM 0.33.0's Prometheus metrics that the stand-in keeps, by their vLLM names.

Every name is in tests/vllm/metric_names.txt (a test checks it). Counters carry the _total
suffix and histograms _bucket/_sum/_count, as prometheus_client exposes vLLM's.
"""

from __future__ import annotations

import threading

LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets, self.counts, self.sum, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out = [f"# TYPE {name} histogram"]
        for bound, count in zip(self.buckets, self.counts, strict=True):
            out.append(f'{name}_bucket{{{labels},le="{float(bound)}"}} {count}')
        out.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.count}')
        out.append(f"{name}_sum{{{labels}}} {self.sum}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out


class Metrics:
    def __init__(self, model_name: str, max_model_len: int | None):
        self.labels = f'engine="0",model_name="{model_name}"'
        self.max_model_len = max_model_len
        self.lock = threading.Lock()
        self.running = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: dict[str, int] = {"length": 0, "stop": 0, "abort": 0}
        self.e2e = _Histogram(LATENCY_BUCKETS)
        self.ttft = _Histogram(LATENCY_BUCKETS)
        self.prompt_hist = _Histogram(TOKEN_BUCKETS)
        self.generation_hist = _Histogram(TOKEN_BUCKETS)

    def started(self) -> None:
        with self.lock:
            self.running += 1

    def finished(self, prompt: int, generated: int, reason: str, seconds: float) -> None:
        with self.lock:
            self.running -= 1
            self.prompt_tokens += prompt
            self.generation_tokens += generated
            self.success[reason] = self.success.get(reason, 0) + 1
            self.e2e.observe(seconds)
            self.ttft.observe(seconds)
            self.prompt_hist.observe(prompt)
            self.generation_hist.observe(generated)

    def aborted(self) -> None:
        with self.lock:
            self.running -= 1

    def exposition(self) -> str:
        labels = self.labels
        with self.lock:
            lines = [
                "# TYPE vllm:num_requests_running gauge",
                f"vllm:num_requests_running{{{labels}}} {self.running}",
                "# TYPE vllm:num_requests_waiting gauge",
                f"vllm:num_requests_waiting{{{labels}}} 0",
                "# TYPE vllm:kv_cache_usage_perc gauge",
                f"vllm:kv_cache_usage_perc{{{labels}}} {min(self.running * 0.01, 1.0)}",
                "# TYPE vllm:cache_config_info gauge",
                f'vllm:cache_config_info{{block_size="16",engine="0",'
                f'max_model_len="{self.max_model_len or ""}"}} 1.0',
                "# TYPE vllm:num_preemptions_total counter",
                f"vllm:num_preemptions_total{{{labels}}} 0",
                "# TYPE vllm:prompt_tokens_total counter",
                f"vllm:prompt_tokens_total{{{labels}}} {self.prompt_tokens}",
                "# TYPE vllm:generation_tokens_total counter",
                f"vllm:generation_tokens_total{{{labels}}} {self.generation_tokens}",
                "# TYPE vllm:request_success_total counter",
            ]
            for reason, count in sorted(self.success.items()):
                lines.append(
                    f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} {count}'
                )
            for name, histogram in (
                ("vllm:e2e_request_latency_seconds", self.e2e),
                ("vllm:time_to_first_token_seconds", self.ttft),
                ("vllm:request_prompt_tokens", self.prompt_hist),
                ("vllm:request_generation_tokens", self.generation_hist),
            ):
                lines += histogram.lines(name, labels)
        return "\n".join(lines) + "\n"

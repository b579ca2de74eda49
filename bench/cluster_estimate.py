"""Simulated wall-clock of MoE-GS training on 1, 2, 4, 8 GPUs: S scenes x K experts, then one router per scene.

Model (what ``backend/cluster`` does on a Ray cluster): every expert is one task holding one GPU for
``load_s + iterations / rate`` seconds; a scene's router is one more task of ``load_s + router_iterations /
router_rate`` s that may start once the scene's K experts are done. Ray hands a free GPU to the oldest waiting
task (FIFO in submission order: scene by scene, expert by expert; a router is submitted when its experts
finish, so it queues behind the experts already waiting), which is greedy list scheduling; we simulate
it event by event. Also printed: the LPT order (longest task first, the classic bin-packing heuristic, what a
user gets by submitting the slowest experts first) and the lower bound max(total work / G, longest chain).

The per-expert rates default to the H100 figures of docs/bench/moe.md (1352x1014, 200k Gaussians, it/s:
deformation 16.0, trajectory 19.9, keyframe 24.1); the fourth expert is assumed as slow as the slowest (16.0).
Iterations, load time and the router's rate are assumptions (flags); see docs/SCALING.md.

    .venv/bin/python bench/cluster_estimate.py [--scenes 6] [--rates 16.0,19.9,24.1,16.0] [--iterations 30000]
"""

from __future__ import annotations

import argparse
import heapq
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    scene: int
    name: str
    seconds: float
    after: tuple[str, ...] = ()  # names of tasks (of the same scene) that must finish first


def make_tasks(scenes: int, rates: list[float], iterations: int, load_s: float, router_iterations: int,
               router_rate: float) -> list[Task]:
    tasks = []
    for s in range(scenes):
        experts = [f"expert{k}" for k in range(len(rates))]
        tasks += [Task(s, e, load_s + iterations / r) for e, r in zip(experts, rates)]
        if router_iterations:
            tasks.append(Task(s, "router", load_s + router_iterations / router_rate, tuple(experts)))
    return tasks


def simulate(tasks: list[Task], gpus: int, order: str = "fifo") -> float:
    """Makespan (s) of greedy list scheduling on ``gpus`` identical GPUs: whenever a GPU is free, it takes the
    first ready task in ``order`` ("fifo": in the order tasks were submitted, a router being submitted when its
    experts finish, as ``train_run_on_ray`` does; "lpt": longest first)."""
    queue = list(tasks) if order == "fifo" else sorted(tasks, key=lambda t: -t.seconds)
    position = {(t.scene, t.name): i for i, t in enumerate(queue)}
    done: dict[tuple[int, str], float] = {}
    free = [0.0] * gpus  # time each GPU becomes free (heap)
    heapq.heapify(free)
    running: list[tuple[float, int, str]] = []  # (end, scene, name)
    now = 0.0
    while queue:
        ready = [t for t in queue if all((t.scene, a) in done and done[(t.scene, a)] <= now for a in t.after)]
        if order == "fifo":  # submitted when its dependencies finished
            ready.sort(key=lambda t: (max([done[(t.scene, a)] for a in t.after], default=0.0),
                                      position[(t.scene, t.name)]))
        if ready and free[0] <= now:
            task = ready[0]
            queue.remove(task)
            heapq.heappop(free)
            end = now + task.seconds
            heapq.heappush(free, end)
            heapq.heappush(running, (end, task.scene, task.name))
            done[(task.scene, task.name)] = end  # known now; used only once `now` passes it
            continue
        # advance to the next event: a GPU freeing up or a dependency finishing
        events = [e for e in [free[0], *[r[0] for r in running]] if e > now]
        now = min(events)
    return max(done.values())


def lower_bound(tasks: list[Task], gpus: int) -> float:
    chains = {}
    for t in tasks:
        if t.after:
            chains[t.scene] = max(x.seconds for x in tasks if x.scene == t.scene and x.name in t.after) + t.seconds
    longest = max([*chains.values(), *(t.seconds for t in tasks)])
    return max(sum(t.seconds for t in tasks) / gpus, longest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--rates", default="16.0,19.9,24.1,16.0", help="it/s of each expert on one GPU")
    ap.add_argument("--iterations", type=int, default=30_000, help="steps per expert")
    ap.add_argument("--load-s", type=float, default=60.0, help="per task: start, dataset decode and upload (s)")
    ap.add_argument("--router-iterations", type=int, default=2000)
    ap.add_argument("--router-rate", type=float, default=10.0, help="router it/s (all experts rendered per step)")
    ap.add_argument("--gpus", default="1,2,4,8")
    a = ap.parse_args()
    rates = [float(r) for r in a.rates.split(",")]
    tasks = make_tasks(a.scenes, rates, a.iterations, a.load_s, a.router_iterations, a.router_rate)
    print(f"{a.scenes} scenes x {len(rates)} experts ({a.iterations} it at {a.rates} it/s, +{a.load_s:.0f} s load "
          f"each) + {a.router_iterations if a.router_iterations else 'no'} router it per scene at "
          f"{a.router_rate} it/s; {len(tasks)} tasks, {sum(t.seconds for t in tasks) / 3600:.2f} GPU-hours")
    print()
    print("| GPUs | FIFO (Ray, submission order) h | speed-up | LPT order h | lower bound h | GPU busy (FIFO) |")
    print("|---|---|---|---|---|---|")
    base = simulate(tasks, 1)
    work = sum(t.seconds for t in tasks)
    for g in (int(x) for x in a.gpus.split(",")):
        fifo, lpt, lb = simulate(tasks, g), simulate(tasks, g, "lpt"), lower_bound(tasks, g)
        print(f"| {g} | {fifo / 3600:.2f} | {base / fifo:.2f}x | {lpt / 3600:.2f} | {lb / 3600:.2f} | "
              f"{work / (g * fifo):.0%} |")


if __name__ == "__main__":
    main()

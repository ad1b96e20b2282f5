"""Load conditioning in one run: a rate limit per request class, a degraded answer, a deadline.

A search service gets 3000 requests in a burst. Paying users have their own token bucket,
free users a smaller one; refused requests get a cached "busy" answer instead of an error;
and requests that waited too long behind the burst are shed (CoDel) rather than served late.

    python examples/conditioning.py
"""

from __future__ import annotations

import anyio

import aseda


def busy(request: tuple[str, int]) -> str:
    return f"busy, try again ({request[0]})"


@aseda.stage(
    workers=8,
    capacity=2000,
    admission=aseda.PerClass(
        {
            "free": aseda.TokenBucket(rate=300, burst=50),
            "paid": aseda.TokenBucket(rate=900, burst=200),
        },
        classify=lambda request: request[0],
        order=["free", "paid"],
    ),
    on_refuse=aseda.Degrade(busy),
    deadline=aseda.QueueDeadline(target=0.005, interval=0.05),
)
async def search(request: tuple[str, int]) -> str:
    await anyio.sleep(0.002)  # the index lookup
    return f"results for {request[0]} #{request[1]}"


async def main() -> None:
    answers: dict[str, int] = {"results": 0, "busy": 0, "shed": 0}
    async with aseda.Graph(search).run() as running:

        async def one(i: int) -> None:
            tier = "paid" if i % 3 == 0 else "free"
            try:
                answer = await running.call((tier, i))
            except aseda.Rejected:
                answers["shed"] += 1
                return
            answers["busy" if answer.startswith("busy") else "results"] += 1

        async with anyio.create_task_group() as tg:
            for i in range(3000):
                tg.start_soon(one, i)
        stats = running.stats()["search"]
    print("answers:", answers)
    print("refusals by reason:", stats.refusals)
    p90 = stats.response.p90 * 1e3
    print(f"served p90 {p90:.1f} ms, degraded {stats.degraded}, shed {stats.shed}")


if __name__ == "__main__":
    anyio.run(main)

"""Live progress lines on a terminal for the commands that take a while (rich progress bars on stderr)."""

from pathlib import Path


def bench(record: Path, device: str, settings: dict, threads: int):
    """A live line on stderr while ``record`` is measured (its path goes to the job log). The payload reports only
    when it is done, so the bar is the time elapsed over the shortest timed window the settings allow
    (``min_seconds``), labelled as the estimate it is."""
    from rich.console import Console
    from rich.progress import Progress, ProgressBar, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

    class EstimatedWindow(ProgressColumn):
        def render(self, task):
            return ProgressBar(total=task.total, completed=min(task.elapsed or 0.0, task.total or 0.0), width=24)

    console = Console(stderr=True)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), EstimatedWindow(), TimeElapsedColumn(),
                        TextColumn("{task.fields[window]}"), console=console, transient=True,
                        disable=not console.is_terminal)  # a job log gets the record's path and result only
    progress.console.print(f"bench: {record}", highlight=False, soft_wrap=True)
    window = f"of ≥{settings['min_seconds']:g} s timed (estimate)" if settings["min_seconds"] \
        else f"{settings['runs']} timed runs"
    progress.add_task(f"{device} · {settings['option_set']} · {threads}t",
                      total=settings["min_seconds"] or None, window=window)
    return progress


def series(series: list[dict]):
    """Yields the nightly's series, showing on stderr which one is being measured, of how many."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("nightly series"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=Console(stderr=True)) as progress:
        task = progress.add_task("", total=len(series))
        for item in series:
            progress.update(task, description=f"{item['recipe']} · {item['format']}")
            yield item
            progress.advance(task)

"""``metaunsup datasets``: list the datasets, verify the files found for each, and fetch the
canonical files of those that can be downloaded.
"""

from __future__ import annotations

import click

from metaunsup.errors import DataError

__all__ = ["datasets"]


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder of the datasets.")
@click.option(
    "--download",
    "download_name",
    metavar="NAME",
    help="Fetch this dataset's canonical files (needs internet) and verify them; the list "
    "this command prints says which datasets can be downloaded.",
)
def datasets(data_dir: str | None, download_name: str | None) -> None:
    """List the datasets and verify the files found for each."""
    from metaunsup import data

    if download_name is not None:
        folder = data.download(download_name, root=data_dir)
        click.echo(f"downloaded {download_name} to {folder}")
    click.echo(f"data folder: {data.resolve_root(data_dir)}")
    bad: dict[str, list[str]] = {}
    for name in data.names():
        s = data.spec(name)
        click.echo(f"{name}: {s.description} (splits: {', '.join(s.splits)})")
        if name == "arrays":
            continue
        for line in s.verify(data.resolve_root(data_dir)):
            click.echo(f"  {line}")
            if line.startswith("BAD "):
                bad.setdefault(name, []).append(line[len("BAD ") :])
    if bad:
        name, lines = next(iter(bad.items()))
        more = sum(map(len, bad.values())) - 1
        raise DataError(
            f"{name}: {lines[0]}"
            + (f" (and {more} more BAD file(s) above)" if more else "")
            + f"; delete the file and get it again with `metaunsup datasets --download {name}`"
        )

"""Choose the pattern sets a command runs with: the shipped ones, an admin's own, a filter.

Thin: reads set files through ``patternset`` and checks an admin's sets against their own
samples (``samples.check``) before anything is matched with them, so a set that gives a
wrong verdict on its own examples never reaches the daemon.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from logwatch import patternset
from logwatch.matcher import DEFAULT_SERVICES, Matcher
from logwatch.patternset import PatternSet, PatternSetError


def select(names: Sequence[str] = (), directories: Sequence[str | os.PathLike[str]] = ()) -> list[PatternSet]:
    """Return the sets to use, admins' first (they may claim a line before ours), then ours.

    Args:
        names: ``--pattern-set`` values; empty means every set. Several restrict to several.
        directories: ``--pattern-dir`` values: folders of an admin's own ``*.toml`` sets.

    Raises:
        PatternSetError: one line: a file that does not parse, a sample its set gets wrong,
            two sets with one name, or a name that no set has.
    """
    own: list[PatternSet] = []
    if directories:
        from logwatch import samples  # only an admin's sets are checked at load
    for directory in directories:
        for pattern_set in patternset.load_dir(directory):
            failures = samples.check(pattern_set)
            if failures:
                more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
                raise PatternSetError(failures[0] + more)
            own.append(pattern_set)
    shipped = patternset.builtin()
    everything = own + shipped
    seen: dict[str, str] = {}
    for pattern_set in shipped + own:  # so the message blames the admin's file, not ours
        if pattern_set.name in seen:
            raise PatternSetError(
                f"{pattern_set.origin}: name: {pattern_set.name!r} is already the name of {seen[pattern_set.name]}"
            )
        seen[pattern_set.name] = pattern_set.origin
    if not names:
        return everything
    unknown = [name for name in names if name not in seen]
    if unknown:
        raise PatternSetError(
            f"--pattern-set: no set is named {unknown[0]!r}; the sets are {', '.join(seen)}"
        )
    return [s for s in everything if s.name in names]


def matcher(names: Sequence[str] = (), directories: Sequence[str | os.PathLike[str]] = (),
            services: Sequence[str] = DEFAULT_SERVICES, version: str | None = None) -> Matcher:
    """Return the matcher that ``relaywatch run`` and ``--test-pattern`` use.

    Sets named with ``--pattern-set`` all claim lines, whatever Dovecot's version: the
    admin chose them. Otherwise the shipped sets claim by the version in use: ``version``
    (``--dovecot-version``) or the one Dovecot's start-up line in the log announces (see
    ``Matcher``).

    Raises:
        PatternSetError, ValueError: one line naming the file or option.
    """
    if version is not None:
        from logwatch import versions

        try:
            versions.check(version)
        except ValueError as exc:
            raise ValueError(f"--dovecot-version: {exc}") from None
    return Matcher(select(names, directories), services=services or DEFAULT_SERVICES,
                   version=version, by_version=not names)

"""Moving a user's checked-out branch to a landed result without running anything.

``git read-tree -u`` in the user's repository would apply the user's config and the
result's attributes: a ``.gitattributes`` written by an agent could select a
``filter.<name>.smudge`` the user configured (git-lfs, git-crypt and nbstripout install
such filters), and run it on the host; ``ident`` or ``working-tree-encoding`` would
rewrite files in the user's tree. So the update runs in a private git directory
(``.capataz/land.git``, kept between landings): minimal config, ``info/attributes``
that neutralise every attribute, the user's objects through alternates, and
``GIT_INDEX_FILE`` pointing at the user's index. Files are written byte for byte as
they are in the result.

That is only correct when the user's checkout needs no conversions for the files that
change. When it does (their attributes or config ask for a filter, ``ident``, a
working-tree encoding or CRLF line endings on a changed path) or the result changes a
``.gitattributes`` (which changes how the whole checkout converts), the tree is not
touched: :func:`update_checkout` says why, and the result waits on its branch for the
user to merge with their own git. ``git check-attr`` and ``git config`` only read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from capataz.statedir import refuse_symlink
from capataz.workspace.git import NEUTRAL_ATTRIBUTES, Git
from capataz.workspace.repo import Worktree

__all__ = ["update_checkout"]

_ATTRIBUTES = ("filter", "ident", "working-tree-encoding", "text", "eol")
_CONFIG = r"^core\.(autocrlf|eol|sparsecheckout)$"
_NOT_SET = ("unspecified", "unset")


def update_checkout(
    worktree: Worktree,
    old: str,
    new: str,
    scratch: Path,
    changed: Sequence[tuple[str, str]] | None = None,
) -> str | None:
    """Move ``worktree`` (clean, on the target branch at ``old``) to ``new``. Returns
    None when done, else why the tree was left alone. Every object of ``new`` must
    already be in the user's store; ``scratch`` is a fresh directory for the private
    git dir. ``changed``: (path, status letter) of every path that differs between
    ``old`` and ``new`` when the caller knows them already (a fast-forward lands the
    very diff the gates judged), which spares a ``git diff-tree``."""
    private = _private_git_dir(scratch, old, worktree)
    plumbing = Git(private, worktree.path, env={"GIT_INDEX_FILE": str(worktree.git_dir / "index")})
    if changed is None:
        changed = _changed_paths(Git(private), old, new)
    attributes = [path for path, _ in changed if Path(path).name == ".gitattributes"]
    if attributes:
        return (
            f"the result changes {attributes[0]}, which would change how your checkout "
            "converts files; capataz does not apply attribute changes to your tree"
        )
    conversion = _needs_conversion(worktree, [path for path, status in changed if status != "D"])
    if conversion is not None:
        return conversion
    dirty = plumbing.run("status", "--porcelain", "--untracked-files=no", check=False)
    if dirty.returncode != 0 or dirty.stdout.strip():
        return f"{worktree.path} has uncommitted changes"
    moved = plumbing.run("read-tree", "-m", "-u", old, new, check=False)
    if moved.returncode != 0:
        return f"updating {worktree.path} would overwrite untracked files"
    return None


def _private_git_dir(path: Path, head: str, worktree: Worktree) -> Path:
    """A git dir written by hand (no process): HEAD detached at the branch's old tip,
    so ``status`` compares the user's index with it. It may be kept from one landing
    to the next (the landing lock serialises its users): then only HEAD is written, and
    the other files only when they differ from what they must say; a fresh one costs a
    handful of directories and files, the largest part of a landing's own file work."""
    refuse_symlink(path)
    if not (path / "info").is_dir():
        for sub in ("", "objects", "objects/info", "refs", "info"):  # parents first
            (path / sub).mkdir(exist_ok=True)
    common = worktree.git_dir
    pointer = worktree.git_dir / "commondir"
    if pointer.is_file():  # a linked worktree: objects live in the common directory
        common = (worktree.git_dir / pointer.read_text().strip()).resolve()
    files = {
        "config": "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n",
        "objects/info/alternates": f"{common / 'objects'}\n",
        "info/attributes": NEUTRAL_ATTRIBUTES,
    }
    for name, text in files.items():
        target = path / name
        try:
            same = target.read_text() == text
        except OSError:
            same = False
        if not same:
            target.write_text(text)
    (path / "HEAD").write_text(f"{head}\n")
    return path


def _changed_paths(git: Git, old: str, new: str) -> list[tuple[str, str]]:
    """(path, status letter) for every path that differs between the two commits."""
    fields = git.out("diff-tree", "-r", "-z", "--no-renames", "--name-status", old, new).split("\0")
    return [(fields[i + 1], fields[i]) for i in range(0, len(fields) - 1, 2)]


def _needs_conversion(worktree: Worktree, paths: list[str]) -> str | None:
    """Why the user's own git would convert one of ``paths`` on checkout, or None.

    Read with the user's full config (system and global too: ``core.attributesFile``
    and ``core.autocrlf`` often live there) and their attributes as the index has them
    (``--cached``: the clean tree at the old tip), ``info/attributes`` included."""
    if not paths:
        return None
    user = Git(worktree.git_dir, worktree.path, isolated=False)
    listed = user.run("config", "--get-regexp", _CONFIG, check=False).stdout.decode()
    config = dict([*line.split(" ", 1), ""][:2] for line in listed.lower().splitlines())
    if config.get("core.sparsecheckout") == "true":
        return "your checkout uses sparse-checkout, which capataz does not apply"
    autocrlf = config.get("core.autocrlf") == "true"
    crlf = autocrlf or config.get("core.eol") == "crlf"
    found = user.run(
        "check-attr",
        "--cached",
        "-z",
        "--stdin",
        *_ATTRIBUTES,
        input_bytes=b"".join(p.encode() + b"\0" for p in paths),
        check=False,
    )
    if found.returncode != 0:
        return "capataz could not read your attributes (git check-attr failed)"
    fields = found.stdout.decode(errors="replace").split("\0")
    values: dict[str, dict[str, str]] = {}
    for i in range(0, len(fields) - 2, 3):
        values.setdefault(fields[i], {})[fields[i + 1]] = fields[i + 2]
    for path, attrs in values.items():
        why = _conversion(attrs, crlf=crlf, autocrlf=autocrlf)
        if why:
            return f"{path} needs {why} in your checkout (your attributes or config)"
    return None


def _conversion(attrs: dict[str, str], *, crlf: bool, autocrlf: bool) -> str | None:
    """The conversion git would apply on checkout. ``text``/``eol`` matter only when
    they produce CRLF: with LF output (Linux defaults) a checkout writes the blob's
    bytes, so ``* text=auto`` alone does not stop a landing."""
    if attrs.get("filter", "unspecified") not in _NOT_SET:
        return f"filter {attrs['filter']!r}"
    if attrs.get("ident") == "set":
        return "ident expansion"
    if attrs.get("working-tree-encoding", "unspecified") not in _NOT_SET:
        return f"working-tree-encoding {attrs['working-tree-encoding']}"
    text = attrs.get("text", "unspecified")
    if text == "unset":
        return None
    if attrs.get("eol") == "crlf":
        return "CRLF line endings (eol=crlf)"
    if (text in ("set", "auto") and crlf) or (text == "unspecified" and autocrlf):
        return "CRLF line endings (core.autocrlf / core.eol)"
    return None

"""Putting the generated snippet where the user can run it.

Why a helper: only a cell's own execution can ask the front end for a new cell
(``set_next_input`` travels as a payload of the execute reply), so exporting from a
button click cannot create one. ``to_next_cell`` says whether it could; the widget
always shows the code in a read-only view as well, ready to copy.
"""

from __future__ import annotations

import html
from typing import Any


def current_shell() -> Any | None:
    """The running IPython shell, or None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    return get_ipython()


def show_once(obj: Any, bundle: dict[str, Any]) -> None:
    """Display ``bundle`` unless ``obj`` was already shown during this cell's run.

    ``%ckdebug`` displays its widget and also returns it (so ``dbg = %ckdebug ...``
    works); without this the last line of a cell would show it twice.
    """
    from IPython.display import display

    shell = current_shell()
    count = getattr(shell, "execution_count", None)
    if count is not None and getattr(obj, "_shown_at", None) == count:
        return
    obj._shown_at = count
    # with a display id, the output can be replaced later (see ``leave_static``)
    obj._display = display(bundle, raw=True, display_id=True)


_OPEN: Any = None  # the debuggers on screen, for the kernel's exit


def leave_static(obj: Any, bundle: dict[str, Any]) -> None:
    """Replace ``obj``'s output with ``bundle`` (a static report without the widget view):
    JupyterLab prefers a widget view even when its model is gone, so a notebook saved
    after this shows the report on reopening, not "Error displaying widget"."""
    handle = getattr(obj, "_display", None)
    if handle is None:
        return
    obj._display = None
    try:
        handle.update(bundle, raw=True)
    except Exception:  # the kernel is going away: nothing more can be shown
        pass


def register_open(obj: Any) -> None:
    """Remember ``obj`` so that the kernel's exit leaves its output static too."""
    global _OPEN
    if _OPEN is None:
        import atexit
        import weakref

        _OPEN = weakref.WeakSet()
        atexit.register(_leave_all_static)
    _OPEN.add(obj)


def _leave_all_static() -> None:
    for obj in list(_OPEN or ()):
        try:
            obj.leave_static()
        except Exception:  # exiting: one failure must not stop the others
            pass


def to_next_cell(code: str, shell: Any | None = None) -> bool:
    """Ask the front end to put ``code`` into a new cell below; True if it was asked."""
    shell = shell if shell is not None else current_shell()
    if shell is None or not hasattr(shell, "set_next_input"):
        return False
    try:
        shell.set_next_input(code, replace=False)
    except TypeError:  # very old shells have no ``replace``
        shell.set_next_input(code)
    return True


def code_html(code: str) -> str:
    """The snippet as an escaped, selectable <pre> block for the read-only code view."""
    return f'<pre class="ck-code">{html.escape(code)}</pre>'


_COPY_CLASS: Any = None


def copy_button(code: str) -> Any | None:
    """A 'Copy' button that writes ``code`` to the clipboard (needs anywidget), else None."""
    global _COPY_CLASS
    if _COPY_CLASS is None:
        _COPY_CLASS = _make_copy_class()
    if _COPY_CLASS is False:
        return None
    return _COPY_CLASS(code=code)


def _make_copy_class() -> Any:
    try:
        import anywidget
        import traitlets
    except ImportError:
        return False

    class CopyButton(anywidget.AnyWidget):
        _esm = """
        function render({ model, el }) {
          const b = document.createElement("button");
          b.className = "ck-copy-button jupyter-button";
          b.textContent = "Copy code";
          b.onclick = async () => {
            try {
              await navigator.clipboard.writeText(model.get("code"));
              b.textContent = "Copied";
            } catch (e) {
              b.textContent = "Select the code and copy it";
            }
            setTimeout(() => { b.textContent = "Copy code"; }, 2000);
          };
          el.appendChild(b);
        }
        export default { render };
        """
        code = traitlets.Unicode("").tag(sync=True)

    return CopyButton

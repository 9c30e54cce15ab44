"""Instruction prompts in the paper's style.

A classification prompt is

    <instruction>
    Options: <option 1>, <option 2>, ...
    <text>
    Answer:

and the target is the label word (a decoder sees " <label>" after the cue, then EOS). The
prompt is a ``Prompt``: a ``str`` that also remembers its three parts, so batching can shorten
the text part alone and never cut the instruction, the options or the "Answer:" cue.
"""

from __future__ import annotations

from asvd_jax.data._tasks import Example, Task

ANSWER_CUE = "Answer:"
"""The last line of every prompt; the answer follows after one space."""


class Prompt(str):
    """A prompt string that keeps ``head + text + tail`` apart.

    ``head`` is the instruction and options, ``text`` the example's text, ``tail`` the answer
    cue. Used anywhere a ``str`` is; batching reads the parts to truncate ``text`` only.
    """

    head: str
    text: str
    tail: str

    def __new__(cls, head: str, text: str, tail: str):
        obj = super().__new__(cls, head + text + tail)
        obj.head, obj.text, obj.tail = head, text, tail
        return obj

    def __reduce__(self):
        return (Prompt, (self.head, self.text, self.tail))


def format_prompt(task: Task, text: str) -> Prompt:
    """The prompt for ``text`` under ``task``'s instruction and options.

    Generation tasks (no options) whose instruction is empty use ``text`` verbatim as the
    prompt (TRACE records carry their own instruction and cue).
    """
    if not task.options and not task.instruction:
        return Prompt("", text, "")
    head = task.instruction.strip() + "\n"
    if task.options:
        head += "Options: " + ", ".join(task.options) + "\n"
    return Prompt(head, text, "\n" + ANSWER_CUE)


def example_prompt(task: Task, example: Example) -> tuple[Prompt, str]:
    """(prompt, answer) for one example of ``task``."""
    return format_prompt(task, example.text), example.label

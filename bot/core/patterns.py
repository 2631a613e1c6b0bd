"""PEFT's `rank_pattern` / `alpha_pattern` lookup, in time linear in the module name's length.

PEFT (`get_pattern_key`) takes the first key, in the config's order, for which
`re.match(rf"(.*\\.)?({key})$", module_name)` succeeds. Running that with Python's backtracking `re` lets a
repo owner hang the bot: `{"(.*.*)*y": 8}` takes exponential time on a 30-character name. So the same
regex is parsed with Python's own regex parser (identical syntax and meaning) and run as a Thompson NFA
whose state sets are cached as a lazy DFA: each character of a name costs at most one pass over the
pattern's states, whatever the pattern. What an NFA cannot decide the same way `re` does is refused, not
guessed: backreferences, lookarounds, conditionals, atomic groups and possessive repeats, inline flags,
keys over `MAX_PATTERN_CHARS`, and patterns whose bounded repeats expand past `MAX_PATTERN_STATES`. So is a
repeat nested in an unbounded repeat (`(.*.*)*y`, `(a+)+`): the NFA runs it in linear time, but PEFT's own
backtracking matcher may never finish, so no rank can be said to be what PEFT declares. A refused
key makes the modules it could match "unknown" (see `PatternUnchecked`), and lora-bot claims nothing about them.

Pure: strings in, booleans out.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache

from bot.core.limits import MAX_PATTERN_CHARS, MAX_PATTERN_STATES

try:  # Python ≥ 3.11
    from re import _constants as _sre
    from re import _parser as _sre_parse
except ImportError:  # Python 3.10
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

_PLAIN = re.compile(r"[\w-]*")  # keys without regex syntax: PEFT's usual full module names and suffixes
_CACHE_ENTRIES = 50_000  # per pattern; past this the DFA cache starts again (bounded memory, same answers)


class PatternRefused(ValueError):
    """The key is a regex lora-bot will not run: the message says why, for the `pattern-unchecked` flag."""


@dataclass(frozen=True)
class _Char:
    test: object  # callable(str) -> bool


@dataclass(frozen=True)
class _Split:
    first: int
    second: int


@dataclass(frozen=True)
class _Jump:
    target: int


@dataclass(frozen=True)
class _Assert:
    kind: str  # "start", "end", "end-string", "boundary", "non-boundary"


_MATCH = "match"


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"  # Python's Unicode `\w`


_CATEGORIES = {
    _sre.CATEGORY_DIGIT: str.isdecimal,  # Python's Unicode `\d`
    _sre.CATEGORY_NOT_DIGIT: lambda ch: not ch.isdecimal(),
    _sre.CATEGORY_SPACE: str.isspace,
    _sre.CATEGORY_NOT_SPACE: lambda ch: not ch.isspace(),
    _sre.CATEGORY_WORD: _is_word,
    _sre.CATEGORY_NOT_WORD: lambda ch: not _is_word(ch),
}
_ASSERTIONS = {
    _sre.AT_BEGINNING: "start",
    _sre.AT_BEGINNING_STRING: "start",
    _sre.AT_END: "end",
    _sre.AT_END_STRING: "end-string",
    _sre.AT_BOUNDARY: "boundary",
    _sre.AT_NON_BOUNDARY: "non-boundary",
}


def _equals(c: str):
    return lambda ch: ch == c


def _differs(c: str):
    return lambda ch: ch != c


def _set_test(items) -> object:
    negate = False
    tests = []
    for op, av in items:
        if op is _sre.NEGATE:
            negate = True
        elif op is _sre.LITERAL:
            tests.append(_equals(chr(av)))
        elif op is _sre.RANGE:
            tests.append(lambda ch, lo=av[0], hi=av[1]: lo <= ord(ch) <= hi)
        elif op is _sre.CATEGORY and av in _CATEGORIES:
            tests.append(_CATEGORIES[av])
        else:
            raise PatternRefused(f"character class item {op} is not supported")
    if negate:
        return lambda ch: not any(t(ch) for t in tests)
    return lambda ch: any(t(ch) for t in tests)


def _has_unbounded_repeat(items) -> bool:
    for op, av in items:
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            if av[1] == _sre.MAXREPEAT or _has_unbounded_repeat(av[2]):
                return True
        elif (op is _sre.SUBPATTERN and _has_unbounded_repeat(av[3])) or (
            op is _sre.BRANCH and any(_has_unbounded_repeat(alt) for alt in av[1])
        ):
            return True
    return False


class _Compiler:
    def __init__(self) -> None:
        self.program: list = []

    def emit(self, instruction) -> int:
        if len(self.program) >= MAX_PATTERN_STATES:
            raise PatternRefused(f"it expands to more than {MAX_PATTERN_STATES:,} states")
        self.program.append(instruction)
        return len(self.program) - 1

    def sequence(self, items) -> None:
        for op, av in items:
            self.item(op, av)

    def item(self, op, av) -> None:
        if op is _sre.LITERAL:
            self.emit(_Char(_equals(chr(av))))
        elif op is _sre.NOT_LITERAL:
            self.emit(_Char(_differs(chr(av))))
        elif op is _sre.ANY:
            self.emit(_Char(lambda ch: ch != "\n"))
        elif op is _sre.IN:
            self.emit(_Char(_set_test(av)))
        elif op is _sre.AT and av in _ASSERTIONS:
            self.emit(_Assert(_ASSERTIONS[av]))
        elif op is _sre.SUBPATTERN:
            _group, add_flags, del_flags, inner = av
            if add_flags or del_flags:
                raise PatternRefused("inline flags are not supported")
            self.sequence(inner)
        elif op is _sre.BRANCH:
            self.branch(av[1])
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):  # greedy or lazy: the same set of matches
            self.repeat(*av)
        else:
            raise PatternRefused(
                f"{str(op).lower()} is not supported (no backreference, lookaround or atomic group)"
            )

    def branch(self, alternatives) -> None:
        jumps = []
        for alternative in alternatives[:-1]:
            split = self.emit(None)
            self.sequence(alternative)
            jumps.append(self.emit(None))
            self.program[split] = _Split(split + 1, len(self.program))
        self.sequence(alternatives[-1])
        for jump in jumps:
            self.program[jump] = _Jump(len(self.program))

    def repeat(self, low: int, high: int, body) -> None:
        if high > 1 and _has_unbounded_repeat(body):
            # `(.*.*)*y`: linear here, but exponential in PEFT's own backtracking `re`, so what PEFT would do
            # with it (hang on load) is no declared rank: refused like the constructs we cannot run.
            raise PatternRefused("a repeat inside a repeat takes exponential time in PEFT's own matcher")
        for _ in range(low):
            self.sequence(body)
        if high == _sre.MAXREPEAT:
            loop = self.emit(None)
            self.sequence(body)
            self.emit(_Jump(loop))
            self.program[loop] = _Split(loop + 1, len(self.program))
            return
        splits = []
        for _ in range(high - low):
            splits.append(self.emit(None))
            self.sequence(body)
        for split in splits:
            self.program[split] = _Split(split + 1, len(self.program))


class Matcher:
    """One compiled key: `matches(name)` answers exactly what PEFT's `re.match` would, in linear time."""

    def __init__(self, program: list) -> None:
        self.program = tuple(program)
        self._steps: dict = {}
        self._closures: dict = {}
        self._lock = threading.Lock()

    def _closure(self, pcs, context) -> frozenset:
        key = (pcs, context)
        found = self._closures.get(key)
        if found is not None:
            return found
        at_start, prev_word, next_word, at_end, before_final_newline = context
        seen = set()
        stack = list(pcs)
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            if pc == len(self.program):
                continue  # the match state
            instruction = self.program[pc]
            if isinstance(instruction, _Split):
                stack += (instruction.second, instruction.first)
            elif isinstance(instruction, _Jump):
                stack.append(instruction.target)
            elif isinstance(instruction, _Assert):
                holds = {
                    "start": at_start,
                    "end": at_end or before_final_newline,
                    "end-string": at_end,
                    "boundary": prev_word != next_word,
                    "non-boundary": prev_word == next_word,
                }[instruction.kind]
                if holds:
                    stack.append(pc + 1)
        result = frozenset(
            pc for pc in seen if pc == len(self.program) or isinstance(self.program[pc], _Char)
        )
        self._remember(self._closures, key, result)
        return result

    def _step(self, pcs: frozenset, ch: str) -> frozenset:
        key = (pcs, ch)
        found = self._steps.get(key)
        if found is None:
            found = frozenset(pc + 1 for pc in pcs if pc < len(self.program) and self.program[pc].test(ch))
            self._remember(self._steps, key, found)
        return found

    def _remember(self, cache: dict, key, value) -> None:
        with self._lock:
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            cache[key] = value

    def matches(self, name: str) -> bool:
        n = len(name)

        def context(pos: int) -> tuple:
            return (
                pos == 0,
                pos > 0 and _is_word(name[pos - 1]),
                pos < n and _is_word(name[pos]),
                pos == n,
                pos == n - 1 and name[pos] == "\n",
            )

        final = len(self.program)
        current = self._closure(frozenset({0}), context(0))
        for pos in range(n):
            if final in current:
                return True
            current = self._closure(self._step(current, name[pos]), context(pos + 1))
            if not current:
                return False
        return final in current


@dataclass(frozen=True)
class CompiledKey:
    key: str
    plain: bool  # no regex syntax: a suffix comparison
    matcher: Matcher | None = None  # the NFA, for keys with repeats or alternatives
    # Keys of fixed width (literals, `.`, classes: a full module path): Python's own `re`, which cannot
    # backtrack more than the wrapper's `(.*\.)?` over such a key (length × key length at worst).
    regex: re.Pattern | None = None


_FIXED_WIDTH = {_sre.LITERAL, _sre.NOT_LITERAL, _sre.ANY, _sre.IN}


def _fixed_width(items) -> bool:
    return all(op in _FIXED_WIDTH for op, _ in items)


@lru_cache(maxsize=4096)
def compile_key(key: str) -> CompiledKey:
    """A rank_pattern key ready to match, or PatternRefused saying why lora-bot will not run it."""
    if _PLAIN.fullmatch(key):
        return CompiledKey(key, True)
    if len(key) > MAX_PATTERN_CHARS:
        raise PatternRefused(f"it is longer than {MAX_PATTERN_CHARS:,} characters")
    try:
        parsed = _sre_parse.parse(rf"(.*\.)?({key})$")
    except re.error:
        return CompiledKey(key, False)  # PEFT's re.match raises; as before, only the exact name matches
    except RecursionError:
        raise PatternRefused("it is nested too deeply") from None
    flags = parsed.state.flags & ~(_sre.SRE_FLAG_UNICODE | _sre.SRE_FLAG_VERBOSE)
    if flags:
        raise PatternRefused("inline flags are not supported")
    try:
        inner = _sre_parse.parse(key)
    except re.error:  # valid only inside the wrapper (`a)|(b`): not a fixed-width key
        inner = None
    if inner is not None and _fixed_width(inner) and not inner.state.flags & ~_sre.SRE_FLAG_UNICODE:
        return CompiledKey(key, False, regex=re.compile(rf"(.*\.)?({key})$"))
    compiler = _Compiler()
    try:
        compiler.sequence(parsed)
    except RecursionError:
        raise PatternRefused("it is nested too deeply") from None
    return CompiledKey(key, False, matcher=Matcher(compiler.program))


def key_matches(compiled: CompiledKey, name: str) -> bool:
    """PEFT's test: does `(.*\\.)?(key)$` match `name` from its start?"""
    if compiled.plain:
        return name == compiled.key or name.endswith("." + compiled.key)
    if compiled.regex is not None:
        return compiled.regex.match(name) is not None
    if compiled.matcher is not None:
        return compiled.matcher.matches(name)
    return name == compiled.key


_DOTTED = re.compile(r"[\w-][\w.-]*")  # literal characters and `.` (any character but a newline)
UNKNOWN = object()  # first_match's answer when a refused key comes before any match


class PatternTable:
    """A config's keys, in the config's order, compiled once: `first_match(name)` is PEFT's `get_pattern_key`.

    A real `rank_pattern` can list every module (tens of thousands of dotted paths): those keys are indexed by
    their length and the places of their dots, so a lookup costs a few dict probes instead of one regex per
    key. The other keys are tried in order, and only before the best indexed match."""

    def __init__(self, keys) -> None:
        self.keys = tuple(keys)
        self.refused: dict[int, str] = {}
        self._groups: dict[tuple[int, tuple[int, ...]], dict[str, int]] = {}
        self._others: list[tuple[int, CompiledKey | None]] = []
        for index, key in enumerate(self.keys):
            if _DOTTED.fullmatch(key):
                dots = tuple(i for i, c in enumerate(key) if c == ".")
                self._groups.setdefault((len(key), dots), {}).setdefault(key, index)
                continue
            try:
                self._others.append((index, compile_key(key)))
            except PatternRefused as why:
                self.refused[index] = str(why)
                self._others.append((index, None))

    def first_match(self, name: str):
        """The index of the first key matching `name`, None when no key does, UNKNOWN when it depends on a
        refused key."""
        best = None
        ends = (len(name), len(name) - 1) if name.endswith("\n") else (len(name),)
        for (length, dots), bucket in self._groups.items():
            for end in ends:
                start = end - length
                # `(.*\.)?` before the key: nothing, or a prefix without a newline that ends with a dot.
                if start < 0 or (start > 0 and (name[start - 1] != "." or "\n" in name[:start])):
                    continue
                segment = name[start:end]
                if dots:
                    if any(segment[i] == "\n" for i in dots):
                        continue
                    chars = list(segment)
                    for i in dots:
                        chars[i] = "."
                    segment = "".join(chars)
                index = bucket.get(segment)
                if index is not None and (best is None or index < best):
                    best = index
        for index, compiled in self._others:
            if best is not None and index > best:
                break
            if compiled is None:
                return UNKNOWN
            if key_matches(compiled, name):
                return index
        return best

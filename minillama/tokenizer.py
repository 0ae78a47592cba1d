"""The tokenizer: SentencePiece byte-pair encoding trained the way Llama 2's was, plus a chat template.

Training (:meth:`Tokenizer.train`) follows Llama 2's recipe: ``model_type=bpe``, digits split into
single-digit tokens (``split_digits``, so ``1234`` is ``1 2 3 4`` and arithmetic sees every digit),
``byte_fallback`` (a character outside the vocabulary becomes its UTF-8 bytes ``<0x..>``, so there
is no unknown token in practice), ``identity`` normalization (no NFKC: the text is left as it is),
runs of spaces kept (``remove_extra_whitespaces=False``) and pieces made only of spaces allowed.
Training runs on one thread and samples nothing, so the same text and settings give the same model
bytes. The model lives in memory; nothing is written until :meth:`Tokenizer.save`.

Vocabulary, by id::

    0 <pad>   1 <unk>   2 <s> (BOS)   3 </s> (EOS)
    4 <|system|>   5 <|user|>   6 <|assistant|>   7 <|end|>     (chat role markers)
    8 .. 263      <0x00> .. <0xFF>                               (the 256 bytes)
    264 ..        learned pieces, most frequent merge first

``<pad>`` is id 0, the default ``pad_id`` of :func:`minillama.generate.generate`. All the
specials are SentencePiece *control* symbols: encoding never produces them from text, so a user
who types ``<|assistant|>`` or ``<s>`` gets ordinary text tokens, never the marker itself. Only
the code (``bos=True``, :meth:`Tokenizer.apply_chat_template`) places them.

Lossless by construction: ``decode(encode(s)) == s`` for every string. Three choices give it:

* ``add_dummy_prefix=False``. Llama 2 put a space in front of every text (so that a text's first
  word tokenizes like a word in the middle of a sentence) and removed it again on decoding; we
  add nothing, so a leading space is an ordinary space, and decoding is plain concatenation:
  ``decode(encode(a) + encode(b)) == a + b``. Packing documents, streaming tokens one by one and
  the chat template all rely on that.
* SentencePiece writes a space as U+2581 ``▁`` internally and turns every ``▁`` back into a space
  on decoding, so a ``▁`` in the *input* would come back as a space. :meth:`Tokenizer.encode`
  therefore encodes each literal ``▁`` as its three UTF-8 byte tokens ``<0xE2><0x96><0x81>``,
  which decode to ``▁`` again.
* :meth:`Tokenizer.decode` joins the pieces' bytes (a byte token is its byte, any other piece its
  text with ``▁`` read as a space) and reads the result as UTF-8. Control tokens are skipped unless
  ``skip_special=False``, which shows them as their names (``<s>``, ``<|user|>``...).

Chat template (:meth:`Tokenizer.apply_chat_template`)::

    <s><|system|>{system}<|end|><|user|>{question}<|end|><|assistant|>{answer}<|end|>...

Each content is encoded on its own, so no token straddles a marker. The assistant mask covers an
answer's tokens and its ``<|end|>`` (the model must learn to stop) but not the ``<|assistant|>``
marker in front (the template supplies it, the model never has to predict it). To generate an
answer, end the prompt with ``add_generation_prompt=True`` and stop on :attr:`Tokenizer.end_id`.

Hugging Face transformers: :meth:`Tokenizer.to_transformers` builds an equivalent
``PreTrainedTokenizerFast`` (a ``tokenizers`` BPE with byte fallback and no normalizer or
prefix space) and :meth:`Tokenizer.save_transformers` writes ``tokenizer.json``,
``tokenizer_config.json`` and the chat template in Jinja. It gives the same ids as
:meth:`Tokenizer.encode`, and decodes them to the same text, except in three cases:

* text containing a literal ``▁``: transformers reads it as a space (as SentencePiece itself does);
* text containing a special token's name such as ``<|user|>``: transformers matches it as that
  special token (``split_special_tokens=True`` turns this off, but then its chat template cannot
  place the markers either);
* a piece that can be cut into two vocabulary pieces in more than one way, where two such cuts
  compete at the same spot: SentencePiece merges the leftmost pair, transformers the pair listed
  first among the merges. The merges are listed in SentencePiece's order of the merged pieces, so
  this needs a rare overlap; it was seen neither on the tests' corpus nor on 75,000 lines of
  Python source (trained on 3 MB of other Python files, vocab_size 2048).
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sentencepiece as spm

from .fileio import atomic_write, save_json

if TYPE_CHECKING:  # transformers is an optional dependency (extra "hf")
    import transformers

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
ROLES = ("system", "user", "assistant")
ROLE_MARKERS = {role: f"<|{role}|>" for role in ROLES}
END = "<|end|>"
SPACE_MARK = "\u2581"  # SentencePiece's space; see the module docstring
MODEL_FILE = "tokenizer.model"

# A training line longer than this is cut into parts: SentencePiece skips sentences over 4192
# bytes, and 1024 characters are at most 4096 bytes of UTF-8.
_MAX_LINE_CHARS = 1024


class Tokenizer:
    """A trained SentencePiece BPE model with Llama's special tokens and a chat template.

    Build one with :meth:`train` or :meth:`load`; ``Tokenizer(model_bytes)`` wraps a serialized
    SentencePiece model that has this module's special tokens.
    """

    def __init__(self, model_bytes: bytes) -> None:
        self.model_bytes = bytes(model_bytes)
        self._sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        names = [PAD, UNK, BOS, EOS, *ROLE_MARKERS.values(), END]
        ids = {name: self._sp.piece_to_id(name) for name in names}
        missing = [name for name in names if self._sp.id_to_piece(ids[name]) != name]
        if missing:
            raise ValueError(f"SentencePiece model lacks the special tokens {missing}; train it with Tokenizer.train")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = ids[PAD], ids[UNK], ids[BOS], ids[EOS]
        self.role_ids = {role: ids[marker] for role, marker in ROLE_MARKERS.items()}
        self.end_id = ids[END]
        self.special_ids = frozenset(i for i in range(self.vocab_size) if self._sp.is_control(i))
        self._surfaces = [self._surface(i) for i in range(self.vocab_size)]
        self._space_mark_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in SPACE_MARK.encode()]

    # ------------------------------------------------------------------ training and files
    @classmethod
    def train(cls, source: str | os.PathLike | Iterable[str], vocab_size: int = 2048, *,
              character_coverage: float = 0.99995, exact_vocab_size: bool = False) -> Tokenizer:
        """Train on ``source``: a path to a UTF-8 text file, or an iterable of texts (documents or
        lines; a text is split into its lines, as newlines are never part of a learned piece).

        ``vocab_size`` counts every token, the 264 fixed ones included. A small or repetitive
        corpus may run out of pairs to merge before that; the result is then smaller (see
        :attr:`vocab_size`) unless ``exact_vocab_size`` asks for an error instead. Characters
        rarer than ``1 - character_coverage`` of the text are left to byte fallback.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        fixed = 8 + 256
        if vocab_size <= fixed:
            raise ValueError(f"vocab_size must be > {fixed} (8 special tokens + 256 bytes), got {vocab_size}")
        if not 0.9 <= character_coverage <= 1.0:
            raise ValueError(f"character_coverage must be in [0.9, 1.0], got {character_coverage}")
        writer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_training_lines(source), model_writer=writer,
                model_type="bpe", vocab_size=vocab_size, hard_vocab_limit=exact_vocab_size,
                character_coverage=character_coverage, split_digits=True, byte_fallback=True,
                normalization_rule_name="identity", add_dummy_prefix=False, remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True, max_sentencepiece_length=16,
                pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece=PAD, unk_piece=UNK, bos_piece=BOS, eos_piece=EOS,
                control_symbols=[*ROLE_MARKERS.values(), END],
                num_threads=1, minloglevel=2,
            )
        except RuntimeError as err:  # SentencePiece reports a bad corpus/size as a RuntimeError
            raise ValueError(f"SentencePiece training failed (vocab_size={vocab_size}): {err}") from err
        return cls(writer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a ``.model`` file, or the ``tokenizer.model`` in a directory."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.is_file():
            raise ValueError(f"no tokenizer model at {path}")
        return cls(path.read_bytes())

    def save(self, path: str | os.PathLike) -> Path:
        """Write the SentencePiece model to ``path`` (a file ending in ``.model``, or a directory that
        gets a ``tokenizer.model``); returns the file written."""
        path = Path(path)
        if path.suffix != ".model":
            path = path / MODEL_FILE
        atomic_write(path, lambda tmp: tmp.write_bytes(self.model_bytes))
        return path

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and other.model_bytes == self.model_bytes

    def __hash__(self) -> int:
        return hash(self.model_bytes)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(i)

    def role_id(self, role: str) -> int:
        if role not in self.role_ids:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return self.role_ids[role]

    def _surface(self, i: int) -> bytes:
        """What token ``i`` contributes to decoded text, as bytes (specials: their name)."""
        piece = self._sp.id_to_piece(i)
        if self._sp.is_byte(i):
            return bytes([int(piece[3:5], 16)])  # "<0x41>" -> b"A"
        if self._sp.is_control(i) or self._sp.is_unknown(i):
            return piece.encode()
        return piece.replace(SPACE_MARK, " ").encode()

    # ------------------------------------------------------------------ encoding
    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text``, optionally with BOS in front and EOS behind."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._wrap(self._encode_plain([text])[0], bos, eos)

    def encode_batch(self, texts: Sequence[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
        """:meth:`encode` for each of ``texts``."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a sequence of str")
        return [self._wrap(ids, bos, eos) for ids in self._encode_plain(list(texts))]

    def pieces(self, text: str) -> list[str]:
        """The pieces ``text`` is cut into (``▁`` is a space, ``<0x0A>`` a byte): for looking at."""
        return [self._sp.id_to_piece(i) for i in self.encode(text)]

    def _wrap(self, ids: list[int], bos: bool, eos: bool) -> list[int]:
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def _encode_plain(self, texts: list[str]) -> list[list[int]]:
        # A literal "▁" would come back as a space: cut the text there and put the character's
        # bytes in between (see the module docstring).
        parts = [text.split(SPACE_MARK) for text in texts]
        try:
            flat = self._sp.encode(list(itertools.chain.from_iterable(parts)))
        except TypeError:  # SentencePiece's complaint about text that is not valid UTF-8
            for text in texts:
                text.encode("utf-8")  # raises UnicodeEncodeError (a ValueError) naming the bad character
            raise
        out, k = [], 0
        for text_parts in parts:
            ids = flat[k]
            for part_ids in flat[k + 1:k + len(text_parts)]:
                ids = ids + self._space_mark_ids + part_ids
            out.append(ids)
            k += len(text_parts)
        return out

    # ------------------------------------------------------------------ decoding
    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of ``ids`` (a list, or a 1-d tensor). Control tokens (pad, BOS, EOS, role markers)
        are dropped, or shown by name with ``skip_special=False``; ``<unk>``, which encoding never
        produces, reads as its name. Bytes that are not valid UTF-8 (a multi-byte character cut
        short) read as U+FFFD."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        n = self.vocab_size
        chunks = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int):
                raise TypeError(f"token ids must be ints, got {type(i).__name__}")
            if not 0 <= i < n:
                raise ValueError(f"token id must be in [0, {n}), got {i}")
            if not (skip_special and i in self.special_ids):
                chunks.append(self._surfaces[i])
        return b"".join(chunks).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ chat
    def apply_chat_template(self, messages: Sequence[Mapping[str, str]],
                            add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
        """Token ids of a conversation and its assistant mask (see the module docstring).

        ``messages`` is a list of ``{"role": "system" | "user" | "assistant", "content": str}``.
        ``mask[i]`` is True exactly where ``ids[i]`` belongs to an assistant answer or the
        ``<|end|>`` closing it: the tokens a supervised fine-tuning loss is computed on.
        ``add_generation_prompt`` appends ``<|assistant|>`` for the model to answer.
        """
        roles, contents = _check_messages(messages)
        ids, mask = [self.bos_id], [False]
        for role, body in zip(roles, self._encode_plain(contents)):
            turn = body + [self.end_id]
            ids += [self.role_ids[role], *turn]
            mask += [False] + [role == "assistant"] * len(turn)
        if add_generation_prompt:
            ids.append(self.role_ids["assistant"])
            mask.append(False)
        return ids, mask

    def render_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False) -> str:
        """The chat template as text, markers shown by name. For reading only: encoding this text
        gives plain-text tokens for the markers, not the markers."""
        return self.decode(self.apply_chat_template(messages, add_generation_prompt)[0], skip_special=False)

    # ------------------------------------------------------------------ transformers
    def to_transformers(self) -> transformers.PreTrainedTokenizerFast:
        """An equivalent ``transformers.PreTrainedTokenizerFast`` (needs the ``hf`` extra); where it
        can differ from :meth:`encode` is listed in the module docstring."""
        from tokenizers import AddedToken, decoders, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers.models import BPE
        from transformers import PreTrainedTokenizerFast

        vocab = {self._sp.id_to_piece(i): i for i in range(self.vocab_size)}
        backend = HFTokenizer(BPE(vocab=vocab, merges=self.merges(), unk_token=UNK, fuse_unk=True,
                                  byte_fallback=True, dropout=None))
        backend.normalizer = None
        # Spaces become "▁" as in SentencePiece; "never" prepends a space (add_dummy_prefix=False).
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE_MARK, prepend_scheme="never", split=False)
        backend.decoder = decoders.Sequence([decoders.Replace(SPACE_MARK, " "), decoders.ByteFallback(),
                                             decoders.Fuse()])
        specials = sorted(self.special_ids)
        backend.add_special_tokens([AddedToken(self._sp.id_to_piece(i), special=True, normalized=False)
                                    for i in specials])
        return PreTrainedTokenizerFast(
            tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
            extra_special_tokens=[*ROLE_MARKERS.values(), END], chat_template=_JINJA_CHAT_TEMPLATE,
            clean_up_tokenization_spaces=False,
        )

    def save_transformers(self, directory: str | os.PathLike) -> Path:
        """Write what ``transformers.AutoTokenizer.from_pretrained(directory)`` loads
        (``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``) and ``tokenizer.model``."""
        directory = Path(directory)
        self.to_transformers().save_pretrained(str(directory))
        self.save(directory)
        return directory

    def merges(self) -> list[tuple[str, str]]:
        """BPE merge rules for a merge-list BPE (``tokenizers``): SentencePiece stores no merges,
        only scored pieces, and at each step joins the adjacent pair that makes the best-scored
        piece. Listing every cut of every learned piece into two vocabulary pieces, best piece
        first, makes a merge-list BPE take the same steps."""
        sp = self._sp
        learned = [i for i in range(self.vocab_size)
                   if not (sp.is_control(i) or sp.is_byte(i) or sp.is_unknown(i) or sp.is_unused(i))]
        pieces = {self._sp.id_to_piece(i) for i in learned}
        order = sorted(learned, key=lambda i: (-self._sp.get_score(i), i))
        rules = []
        for i in order:
            piece = self._sp.id_to_piece(i)
            rules += [(piece[:cut], piece[cut:]) for cut in range(1, len(piece))
                      if piece[:cut] in pieces and piece[cut:] in pieces]
        return rules


# The same text as Tokenizer.render_chat, for transformers' apply_chat_template.
_JINJA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('role must be system, user or assistant') }}{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def _check_messages(messages: Sequence[Mapping[str, str]]) -> tuple[list[str], list[str]]:
    if isinstance(messages, (str, Mapping)):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    roles, contents = [], []
    for k, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{k}] must be a dict with 'role' and 'content', got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{k}]['role'] must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise TypeError(f"messages[{k}]['content'] must be a str, got {type(content).__name__}")
        roles.append(role)
        contents.append(content)
    return roles, contents


def _training_lines(source: str | os.PathLike | Iterable[str]) -> Iterator[str]:
    """The sentences SentencePiece trains on: every non-empty line of ``source``, long ones cut.
    Checks ``source`` now, not when SentencePiece first pulls a line."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"source must be a text file's path or an iterable of texts; no file at {path}")
        return _cut_lines(_read_lines(path))
    if not isinstance(source, Iterable):
        raise TypeError(f"source must be a path or an iterable of str, got {type(source).__name__}")
    return _cut_lines(source)


def _cut_lines(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"training texts must be str, got {type(text).__name__}")
        for line in text.splitlines():
            for start in range(0, len(line), _MAX_LINE_CHARS):
                yield line[start:start + _MAX_LINE_CHARS]


def _read_lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        yield from f


# ---------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="minillama tokenizer",
        description="Train a SentencePiece BPE tokenizer (Llama 2 recipe) on text files and save it.")
    parser.add_argument("--input", required=True, nargs="+", type=Path, help="UTF-8 text file(s) to train on")
    parser.add_argument("--vocab-size", type=int, default=2048, help="number of tokens, specials included (2048)")
    parser.add_argument("--character-coverage", type=float, default=0.99995,
                        help="share of characters that get their own token; the rest fall back to bytes")
    parser.add_argument("--exact-vocab-size", action="store_true",
                        help="fail if the text cannot fill --vocab-size (default: stop with fewer tokens)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--no-transformers", action="store_true",
                        help="write only tokenizer.model, not the transformers files")
    args = parser.parse_args(argv)

    for path in args.input:
        if not path.is_file():
            parser.error(f"--input: no file at {path}")
    started = time.perf_counter()
    lines = itertools.chain.from_iterable(_read_lines(path) for path in args.input)
    tok = Tokenizer.train(lines, args.vocab_size, character_coverage=args.character_coverage,
                          exact_vocab_size=args.exact_vocab_size)
    seconds = time.perf_counter() - started
    tok.save(args.out)
    if not args.no_transformers:
        try:
            tok.save_transformers(args.out)
        except ImportError:
            print("transformers is not installed: wrote tokenizer.model only (pip install 'minillama[hf]')")
    stats = corpus_stats(tok, args.input)
    save_json(args.out / "tokenizer_stats.json", stats)
    print(f"trained in {seconds:.1f} s: vocab_size {tok.vocab_size} (asked {args.vocab_size}), "
          f"{stats['chars_per_token']:.2f} characters per token on the training text")
    print(f"wrote {args.out}: " + ", ".join(sorted(p.name for p in args.out.iterdir())))
    return 0


def corpus_stats(tok: Tokenizer, paths: Iterable[Path]) -> dict[str, Any]:
    """Compression on text files: characters and tokens counted line by line."""
    chars = tokens = 0
    lines = itertools.chain.from_iterable(_read_lines(path) for path in paths)
    while batch := list(itertools.islice(lines, 4096)):
        chars += sum(map(len, batch))
        tokens += sum(map(len, tok.encode_batch(batch)))
    return {"vocab_size": tok.vocab_size, "characters": chars, "tokens": tokens,
            "chars_per_token": chars / max(tokens, 1)}


if __name__ == "__main__":
    sys.exit(main())

"""Field encryption at rest: AEAD-sealed columns with a keyed blind index for exact look-ups.

A :class:`Sealed` column (``customers.email``, ``customers.phone``, ``contacts.email``,
``contacts.phone``) stores, when ``[privacy.encryption]`` names its field, not the value but::

    $e1$<blind index>$<key id>$<base64url(nonce + AES-256-GCM ciphertext and tag)>

So does ``customers.birthday`` (:class:`SealedDate`, with the readable ``MM-DD`` before the
sealed part: ``$e1$<index>$<key id>$MM-DD$<sealed>``, see :func:`birthday_month_day`) and each
sealed custom field (``custom.NAME``) inside ``customers.attributes`` (:class:`SealedAttributes`).
Copies the CRM keeps of a customer (audit values, merge before-states, stored API responses)
are sealed with :func:`seal_tree`.

- The *blind index* is a keyed BLAKE2b MAC (128 bits) of the value, personalised by the
  field: equal values have equal indexes, and nobody without the key can compute one from a
  guessed phone number.  It comes first, so the column's ordinary B-tree index finds a value
  by a range over its prefix (``col > '$e1$IDX' AND col < '$e1$IDX%'``): :class:`Sealed`
  turns ``col == value`` (and ``col.in_([...])``) into that range, on every database (the
  core's text comparisons are bytewise: SQLite BINARY, MariaDB ``utf8mb4_bin``, PostgreSQL
  ``C`` or byte order for ASCII; a PostgreSQL database whose collation is not, such as
  ``en_US`` or an ICU locale, is detected (:func:`check_collation`) and compared
  ``COLLATE "C"``).  A column with a *look-up column* (``customers.email`` and ``.phone``:
  the generated, indexed ``email_key`` / ``phone_key``, which hold the blind index of a sealed
  value) is compared there instead, by equality with the blind index, and has no index of
  its own (see :func:`_compile_sealed_equals`).
- The value itself is sealed with AES-256-GCM (cryptography's AEAD), a random 96-bit nonce
  per value and the field's name as associated data, so a sealed email cannot be passed off as
  a phone number.
- Keys: each configured master key (32 random bytes, base64url) gives an encryption key and
  an index key through HKDF-SHA256.  The first key seals; every key listed opens, and a look-up
  compares the blind index under every listed key (one range each, OR-ed), so a value sealed
  with an older key is found before a rotation (``crm privacy rotate-key``) re-seals it with
  the new first key.

The cipher belongs to one engine (``engine.dialect.crm_cipher``, set by the CRM when it opens),
so the columns' bind and result processors (also the importer's bulk path, which uses them)
seal and open without any caller knowing.  Without a cipher, values are stored as they are and
a sealed value read back is an error asking for the key.  What no blind index can do: search
inside a sealed value (``email__contains``, ``crm customer search`` by part of a number).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable
from datetime import date
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Integer, String, and_, case, cast, false, func, literal_column, or_, text, type_coerce
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import NullType, TypeDecorator

from ..domain.errors import ConfigError
from .pointread import json_inline

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# cryptography is imported where a key is made: only a database with sealed fields needs it, and
# importing it cost every command's start-up about 10 ms.

#: What every sealed value starts with (format 1).
MARK = "$e1$"
#: The fields that can be sealed (configured by name; ``recipient``, the outbox's address
#: column, is sealed whenever one of them is; a customer custom field as ``custom.NAME``).
FIELDS = ("email", "phone", "birthday")
#: How a sealed custom field is named in ``[privacy.encryption] fields``.
CUSTOM = "custom."
# A sealed birthday keeps its month and day readable ("MM-DD", no year: nobody is singled out
# by it) after the key id, so birthday bonuses and greetings stay set-based SQL
# (:func:`birthday_month_day`).  The blind index and key id have fixed lengths, so it is at a
# fixed position: $e1$ (4) + index (22) + $ + key id (6) + $, then MM-DD from character 35.
_INDEX = 22  # characters of a blind index (128 bits in base64url)
_MD_AT = len(MARK) + _INDEX + 1 + 6 + 1 + 1
_NONCE = 12
#: The most keys listed at once: a look-up compares the blind index of each (one range per key,
#: so a value is found before and after a rotation), and the statement holds one slot per key.
MAX_KEYS = 8


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    # base64url without padding; binascii directly is a third cheaper than base64's wrappers,
    # which counts at two encodings per sealed value.
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


class _Nonces:
    """Random 96-bit nonces drawn from the OS in blocks (one ``getrandom`` per 1,024 nonces
    instead of one per sealed value: a third of a seal's time), each handed out once.

    The block is cut into a list of nonces and :meth:`take` pops one: ``list.pop`` is atomic
    (one C call under the GIL, a per-list lock without it), so two threads never get the same
    nonce, without a Python-level lock per value (which cost as much as the ``getrandom`` it
    saves).  Only a refill takes the lock.  A forked child empties the list it inherited *in
    place* (a sealer holds its ``pop``), so two processes never hand out the same bytes."""

    def __init__(self, count: int = 1024):
        self._size = count * _NONCE
        self._lock = threading.Lock()
        self._pool: list[bytes] = []
        #: One nonce, for a sealer's hot loop (``IndexError`` when empty: then :meth:`take`).
        self.pop = self._pool.pop
        os.register_at_fork(after_in_child=self._drop)

    def _drop(self) -> None:
        self._pool.clear()

    def take(self) -> bytes:
        """A nonce no other call, thread or process gets."""
        while True:
            try:
                return self._pool.pop()
            except IndexError:
                with self._lock:
                    if not self._pool:
                        block = os.urandom(self._size)
                        self._pool.extend([block[at:at + _NONCE] for at in range(0, self._size, _NONCE)])


_nonces = _Nonces()
#: How many recent blind indexes and sealings a cipher remembers (then it starts again): an
#: import's door check asks for the blind indexes of the values its batch just sealed.
_MEMO = 1 << 15


def _unb64(encoded: str) -> bytes:
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def new_key() -> str:
    """A fresh master key (32 random bytes, base64url), for a key file or variable."""
    return _b64(os.urandom(32))


class Cipher:
    """Seals and opens the configured fields with the first key; opens with any listed key."""

    def __init__(self, keys: Iterable[str], fields: Iterable[str]):
        self.fields = frozenset(fields)
        #: The customer custom fields sealed (names without ``custom.``).
        self.custom = frozenset(f.removeprefix(CUSTOM) for f in self.fields if f.startswith(CUSTOM))
        self._aead: dict[str, AESGCM] = {}
        self._indexes: list[bytes] = []
        self._keyed: dict[tuple[str, int], Any] = {}
        # Recent work, bounded: blind indexes by (field, value, key) and the values of what this
        # cipher sealed last (the importer's door check compares a batch's sealed rows by their
        # values; opening them again would cost as much as sealing them).
        self._prefixes: dict[tuple[str, str, int], str] = {}
        self._sealed: dict[str, tuple[str, str]] = {}
        # What the sealers noted for :meth:`hand_over` (field -> stored form, value, stored form, ...).
        self._noted: dict[str, list[str]] = {}
        self.key_id = ""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        keys = list(keys)
        if len(keys) > MAX_KEYS:
            raise ConfigError(f"[privacy.encryption] lists {len(keys)} keys; at most {MAX_KEYS} (finish a "
                              f"rotation with `crm privacy rotate-key`, then remove the old keys)")
        for number, encoded in enumerate(keys, 1):
            try:
                master = _unb64(encoded.strip())
            except ValueError:
                master = b""
            if len(master) != 32:
                raise ConfigError(f"[privacy.encryption] key {number} is not 32 bytes in base64url "
                                  f"(make one with `crm privacy new-key`)")
            key_id = _b64(hashlib.sha256(master).digest()[:4])
            self._aead[key_id] = AESGCM(_derive(master, b"crmcore field encryption"))
            self._indexes.append(_derive(master, b"crmcore blind index"))
            self.key_id = self.key_id or key_id
        if not self._indexes:
            raise ConfigError("[privacy.encryption] no key: set key_env or key_file")

    def seals(self, field: str) -> bool:
        """Whether ``field`` is configured to be sealed (an outbox recipient, an email address or
        a phone number, whenever any field is)."""
        return field in self.fields or (field == "recipient" and bool(self.fields))

    @property
    def key_count(self) -> int:
        """How many keys are listed (each gives a blind index a look-up compares)."""
        return len(self._indexes)

    def prefix(self, field: str, value: str, key: int = 0) -> str:
        """``$e1$`` and the blind index of ``value`` in ``field`` under the ``key``-th listed key
        (the first: what every sealing of it now starts with; the others: what values not yet
        rotated start with)."""
        number = min(key, len(self._indexes) - 1)
        memo = (field, value, number)
        known = self._prefixes.get(memo)
        if known is not None:
            return known
        # Keyed BLAKE2b is a MAC (RFC 7693) and about four times faster here than HMAC-SHA256;
        # the field is its personalisation, so an email and a phone never share an index.  The
        # keyed state is made once per field and key and copied (the key block is hashed once).
        mac = self._keyed_state(field, number).copy()
        mac.update(value.encode("utf-8", "surrogatepass"))
        if len(self._prefixes) >= _MEMO:
            self._prefixes.clear()
        self._prefixes[memo] = prefix = MARK + _b64(mac.digest())
        return prefix

    def _keyed_state(self, field: str, number: int) -> Any:
        keyed = self._keyed.get((field, number))
        if keyed is None:
            keyed = self._keyed[field, number] = hashlib.blake2b(key=self._indexes[number], digest_size=16,
                                                                  person=_person(field))
        return keyed

    def seal(self, field: str, value: str, index: str | None = None) -> str:
        """The stored form of ``value`` (``index``: the text its blind index is of, when not
        ``value`` itself: a custom field's JSON value is sealed, its text is indexed).  A
        birthday (``YYYY-MM-DD``) keeps its month and day after the key id (see ``_MD_AT``)."""
        nonce = _nonces.take()
        sealed = self._aead[self.key_id].encrypt(nonce, value.encode("utf-8", "surrogatepass"), field.encode())
        clear = f"{value[5:10]}$" if field == "birthday" and len(value) == 10 else ""
        stored = f"{self.prefix(field, value if index is None else index)}${self.key_id}${clear}{_b64(nonce + sealed)}"
        if len(self._sealed) >= _MEMO:
            self._sealed.clear()
        self._sealed[stored] = (field, value)
        return stored

    def sealer(self, field: str, remember: bool = True) -> Callable[[Any], Any]:
        """:meth:`seal` for the values of one ``field``, one after another (the importer's bound
        rows, a few hundred thousand values): the same stored form, with what each call would look
        up (the sealing key, the field's associated data, its keyed blind-index state, whether it
        is a birthday) settled once, and the value encoded once for both the MAC and the cipher.
        It takes what the column's bind processor takes: None stays None, a value that is not
        text is sealed as its text (a date as ``YYYY-MM-DD``).  ``remember``: note each sealing
        for :meth:`hand_over` (the importer's door check asks for the addresses and numbers
        again); False for fields nobody asks again (birthdays).  The key is the first key at the
        time of the call: a sealer lives as long as one import."""
        encrypt = self._aead[self.key_id].encrypt
        associated = field.encode()
        keyed = self._keyed_state(field, 0)
        after = f"${self.key_id}$"
        birthday = field == "birthday"
        pop, take = _nonces.pop, _nonces.take
        b2a, urlsafe = binascii.b2a_base64, _URLSAFE
        # Noted as two appends to a flat list (stored form, value), not two dictionary entries:
        # a twentieth of the cost, in the worker that seals; :meth:`take_over` builds the look-ups
        # once per batch in the process that asks.
        noted = self._noted.setdefault(field, [])
        note = noted.append if remember else None

        def seal(value: Any) -> Any:
            if value is None:
                return None
            if value.__class__ is not str:
                value = value.isoformat() if birthday and isinstance(value, date) else str(value)
            data = value.encode("utf-8", "surrogatepass")
            mac = keyed.copy()
            mac.update(data)
            # _b64 written out twice: a call each is a tenth of the sealing.
            prefix = MARK + b2a(mac.digest(), newline=False).translate(urlsafe).rstrip(b"=").decode("ascii")
            try:
                nonce = pop()
            except IndexError:  # the block is used up (or dropped in a forked child)
                nonce = take()
            blob = b2a(nonce + encrypt(nonce, data, associated), newline=False).translate(urlsafe).rstrip(b"=")
            if birthday:
                clear = f"{value[5:10]}$" if len(value) == 10 else ""
                stored = f"{prefix}{after}{clear}{blob.decode('ascii')}"
            else:
                stored = f"{prefix}{after}{blob.decode('ascii')}"
            if note is not None:
                if len(noted) >= 2 * _MEMO:  # nobody took them: start again (bounded memory)
                    noted.clear()
                note(stored)
                note(value)
            return stored

        return seal

    def open(self, field: str, stored: str) -> str:
        """The value of a stored form (any listed key); a tampered or foreign value is an error."""
        recent = self._sealed.get(stored)
        if recent is not None and recent[0] == field:  # sealed by this cipher a moment ago
            return recent[1]
        try:
            parts = stored.split("$")
            key_id, blob = parts[3], parts[-1]
            data = _unb64(blob)
            aead = self._aead[key_id]
            return aead.decrypt(data[:_NONCE], data[_NONCE:], field.encode()).decode("utf-8", "surrogatepass")
        except KeyError:
            raise ConfigError(f"a sealed {field} was sealed with a key that is not configured "
                              f"(key id {stored.split('$')[3]!r}): list the old key after the new one") from None
        except Exception:
            raise ConfigError(f"a sealed {field} value cannot be opened (damaged, or not sealed by crmcore)") from None

    def hand_over(self, fields: Iterable[str] | None = None) -> dict[str, list[str]]:
        """What this cipher sealed since it last handed over, by field (of ``fields`` only, when
        given): stored form and value after one another in a flat list (``[stored, value, stored,
        value, ...]``: half the pickling of a dictionary), all of it forgotten here.  An import's
        validation worker returns it with its rows, so the importing process compares the rows by
        value (:meth:`take_over`) without opening each again."""
        handed: dict[str, list[str]] = {}
        wanted = None if fields is None else frozenset(fields)
        for stored, (field, value) in self._sealed.items():
            if wanted is None or field in wanted:
                handed.setdefault(field, []).extend((stored, value))
        self._sealed = {}
        for field, noted in self._noted.items():
            if noted and (wanted is None or field in wanted):
                handed.setdefault(field, []).extend(noted)
            noted.clear()  # in place: the field's sealers append to this list
        return handed

    def take_over(self, handed: dict[str, list[str]]) -> None:
        """Remember sealings :meth:`hand_over` gave (here or in another process), so that
        :meth:`open` finds their values, and the blind index each begins with (under the first
        key, of the value itself unless a custom field's), so that :meth:`prefix` finds it."""
        width = len(MARK) + _INDEX
        count = sum(len(flat) for flat in handed.values()) // 2
        # Room for all of it first: the batch about to be compared needs every field's.
        if len(self._sealed) + count > _MEMO:
            self._sealed.clear()
        if len(self._prefixes) + count > _MEMO:
            self._prefixes.clear()
        for field, flat in handed.items():
            stored, values = flat[0::2], flat[1::2]
            # Built by zip and map, not a loop: a few hundred nanoseconds a value less, for every
            # address and number of an import.
            self._sealed.update(zip(stored, zip(repeat(field), values)))
            if not field.startswith(CUSTOM):
                self._prefixes.update(zip(zip(repeat(field), values, repeat(0)),
                                          map(itemgetter(slice(0, width)), stored)))

    def forget(self) -> None:
        """Drop the remembered blind indexes and recent sealings (after an erasure: no erased
        value stays in this process's memory)."""
        self._prefixes.clear()
        self._sealed.clear()
        for noted in self._noted.values():
            noted.clear()

    def current(self, stored: str) -> bool:
        """Whether ``stored`` is sealed with the first key (a rotation leaves it alone)."""
        return stored.startswith(MARK) and stored.split("$", 4)[3] == self.key_id

    def seals_custom(self, name: str) -> bool:
        """Whether the customer custom field ``name`` is sealed."""
        return name in self.custom


def _person(field: str) -> bytes:
    """The blind index's personalisation (16 bytes at most): the field's name, or a hash of a
    longer one (``custom.passport_no``), so two fields never share an index."""
    name = field.encode()
    return name if len(name) <= 16 else hashlib.blake2b(name, digest_size=16).digest()


def _derive(master: bytes, purpose: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


# Stored forms whose order decides whether a blind-index range finds exactly one value's rows.
_ORDER_SAMPLES = ("$e1$A", "$e1$A$k", "$e1$A%", "$e1$A-", "$e1$A_", "$e1$Aa", "$e1$a", "$e1$B", "$e1$-", "$e1$_",
                  "$e1$0")


def check_collation(engine: Any) -> None:
    """Note on a PostgreSQL engine whether its text order is bytewise for sealed values (``C``,
    ``C.UTF-8``: the range uses the column's index); otherwise (``en_US``, an ICU locale, which
    skip punctuation) the ranges compare ``COLLATE "C"``: right, but without the index."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        # In the database's default collation, which the sealed columns have.
        found = list(conn.execute(text("SELECT v FROM unnest(CAST(:v AS text[])) AS t(v) ORDER BY v"),
                                  {"v": list(_ORDER_SAMPLES)}).scalars())
        conn.rollback()
    engine.dialect.crm_bytewise = found == sorted(_ORDER_SAMPLES)


def cipher_of(dialect: Any) -> Cipher | None:
    """The cipher of the engine whose dialect this is (None: encryption is off)."""
    found: Cipher | None = getattr(dialect, "crm_cipher", None)
    return found


def sealed(dialect: Any, field: str) -> bool:
    """Whether ``field`` is sealed on the engine of ``dialect``."""
    cipher = cipher_of(dialect)
    return cipher is not None and cipher.seals(field)


class SealedKey(TypeDecorator[str]):
    """The type of a value compared with a sealed column: its blind index prefix when the field
    is sealed, the value itself when not."""

    impl = String
    cache_ok = True

    def __init__(self, field: str, key: int = 0):
        super().__init__()
        self.field, self.key = field, key

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        cipher = cipher_of(dialect)
        if value is None or cipher is None or not cipher.seals(self.field):
            return value
        return cipher.prefix(self.field, str(value), self.key)

    def bind_processor(self, dialect: Any) -> Any:
        """No processor at all on an engine without a cipher (the value is bound as it is: a point
        read by email binds four copies of it, each a call through TypeDecorator's processor).
        The cipher is the engine's from its start (``CRM._prepare_engine``), before any statement
        is compiled for it."""
        if cipher_of(dialect) is None:
            return self.impl_instance.bind_processor(dialect)
        return super().bind_processor(dialect)


class _SealedComparator(TypeDecorator.Comparator[Any]):
    """``==`` and ``in_`` compare blind indexes where the field is sealed (see the module)."""

    def operate(self, op: Any, *other: Any, **kwargs: Any) -> ColumnElement[Any]:
        field = self.type.field  # type: ignore[attr-defined]
        if op is operators.eq and other[0] is not None:
            return _equals(self.expr, field, other[0])
        if op is operators.in_op and isinstance(other[0], (list, tuple)):
            values = [v for v in other[0] if v is not None]
            return or_(*[_equals(self.expr, field, v) for v in values]) if values else false()
        return super().operate(op, *other, **kwargs)


class Sealed(TypeDecorator[str]):
    """A text column whose values are sealed when ``[privacy.encryption]`` names ``field``.

    ``limit`` is the longest value a person may give (what validation checks); the column is
    wider, for the sealed form.  ``lookup`` names an indexed column of the same table that the
    database derives from this one (``customers.email_key``: :func:`lookup_key` of the stored
    value, lower-cased when ``fold``): equality look-ups then go through it alone (see
    :func:`_compile_sealed_equals`), so this column needs no index of its own.
    """

    impl = String
    cache_ok = True
    comparator_factory = _SealedComparator

    def __init__(self, field: str, limit: int, width: int, lookup: str | None = None, fold: bool = False):
        super().__init__(width)
        self.field, self.limit, self.lookup, self.fold = field, limit, lookup, fold

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        cipher = cipher_of(dialect)
        # Always sealed, even a value that looks sealed: a person's input is never taken for a
        # stored form (only a rotation writes sealed values, past this type, as plain strings).
        if value is None or cipher is None or not cipher.seals(self.field):
            return value
        return cipher.seal(self.field, str(value))

    def sealing_processor(self, cipher: Cipher | None, remember: bool = True) -> Callable[[Any], Any] | None:
        """What :meth:`process_bind_param` does with ``cipher``, as one function for a bulk path's
        many rows (:meth:`Cipher.sealer`); None when ``cipher`` leaves the field as it is.  Not the
        type's own bind processor: SQLAlchemy keeps that per dialect, and an engine's cipher is
        looked up at each call there."""
        if cipher is None or not cipher.seals(self.field):
            return None
        return cipher.sealer(self.field, remember)  # None stays None, a non-text value is sealed as str()

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None or not value.startswith(MARK):
            return value
        return _opener(dialect, self.field).open(self.field, value)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        """:meth:`process_result_value` as the column's processor itself where the text needs no
        processing of its own (every dialect's String): one call per value, not TypeDecorator's
        two (an email and a phone in every customer read)."""
        if self.impl_instance.result_processor(dialect, coltype) is not None:
            return super().result_processor(dialect, coltype)
        field = self.field

        def process(value: Any) -> Any:
            if value is None or not value.startswith(MARK):
                return value
            return _opener(dialect, field).open(field, value)
        # A point read's row function checks the mark itself: a plain value costs no call.
        process.crm_inline = (["if {v}.startswith(SEALED_MARK): {v} = {p}({v})"],  # type: ignore[attr-defined]
                              {"SEALED_MARK": MARK})
        return process


def _opener(dialect: Any, field: str) -> Cipher:
    cipher = cipher_of(dialect)
    if cipher is None:
        raise ConfigError(f"the database holds encrypted {field} values: configure the key "
                          f"([privacy.encryption] key_env or key_file)")
    return cipher


class SealedDate(TypeDecorator[date]):
    """The birthday column (revision 0014_privacy_fields): a date stored as ``YYYY-MM-DD`` text,
    sealed when ``[privacy.encryption]`` names ``birthday`` (its month and day stay readable, see
    :func:`birthday_month_day`); read back as a :class:`datetime.date`.  Exact look-ups work as
    for :class:`Sealed`; ranges (``birthday < 1990-01-01``) compare the text, which is right for
    plain dates and meaningless for sealed ones (docs/privacy.md)."""

    impl = String
    cache_ok = True
    comparator_factory = _SealedComparator
    field = "birthday"

    def __init__(self, width: int = 128):
        super().__init__(width)

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        text_ = value.isoformat() if isinstance(value, date) else str(value)
        cipher = cipher_of(dialect)
        if cipher is None or not cipher.seals(self.field):
            return text_
        return cipher.seal(self.field, text_)

    def sealing_processor(self, cipher: Cipher | None, remember: bool = True) -> Callable[[Any], Any] | None:
        """As :meth:`Sealed.sealing_processor`, for dates."""
        if cipher is None or not cipher.seals(self.field):
            return None
        return cipher.sealer(self.field, remember)  # a date is sealed as YYYY-MM-DD (isoformat)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None or isinstance(value, date):
            return value
        if value.startswith(MARK):
            value = _opener(dialect, self.field).open(self.field, value)
        return date.fromisoformat(value)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        """:meth:`process_result_value` in one call per value (as :meth:`Sealed.result_processor`)."""
        if self.impl_instance.result_processor(dialect, coltype) is not None:
            return super().result_processor(dialect, coltype)
        field = self.field

        def process(value: Any) -> Any:
            if value is None or isinstance(value, date):
                return value
            if value.startswith(MARK):
                value = _opener(dialect, field).open(field, value)
            return date.fromisoformat(value)
        return process


def birthday_month_day(column: Any) -> tuple[ColumnElement[int], ColumnElement[int]]:
    """SQL for the month and the day of a birthday column (plain ``YYYY-MM-DD`` or sealed, whose
    ``MM-DD`` stays readable): for set-based birthday bonuses and greetings on every database."""
    raw = type_coerce(column, String)  # the stored text: a bound pattern is not sealed
    # No coalesce: a NULL birthday stays NULL (CAST('' AS INTEGER) fails on PostgreSQL).
    md = type_coerce(case((raw.like(MARK + "%"), func.substr(raw, _MD_AT, 5)),
                          else_=func.substr(raw, 6, 5)), String)
    return (cast(func.substr(md, 1, 2), Integer), cast(func.substr(md, 4, 2), Integer))


class SealedAttributes(TypeDecorator[Any]):
    """Customers' ``attributes`` (custom fields, JSON): the values of the custom fields
    ``[privacy.encryption]`` names (``custom.NAME``) are sealed, each as its own sealed string
    (the JSON value sealed, its text indexed: ``attributes.NAME = value`` finds it exactly)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        cipher = cipher_of(dialect)
        if cipher is None or not cipher.custom or not isinstance(value, dict):
            return value
        return {k: _seal_custom(cipher, k, v) if cipher.seals_custom(k) else v for k, v in value.items()}

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if not isinstance(value, dict) or not any(isinstance(v, str) and v.startswith(MARK) for v in value.values()):
            return value
        cipher = _opener(dialect, "custom field")
        return {k: _open_custom(cipher, k, v) for k, v in value.items()}

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        """The JSON's processor and :meth:`process_result_value` in one function, with a loop
        instead of ``any()`` over a generator (a customer's attributes on every read)."""
        parse = self.impl_instance.result_processor(dialect, coltype)
        if parse is None:
            return super().result_processor(dialect, coltype)

        def process(value: Any) -> Any:
            value = parse(value)
            if isinstance(value, dict):
                for item in value.values():
                    if isinstance(item, str) and item.startswith(MARK):
                        cipher = _opener(dialect, "custom field")
                        return {k: _open_custom(cipher, k, v) for k, v in value.items()}
            return value
        # A point read's row function parses the text itself (pointread.json_inline: orjson on
        # SQLite) and checks the values for the mark: a plain dict costs no call.
        found = json_inline(self, dialect, coltype)
        if found is not None:
            fast, names = found
            process.crm_inline = ([  # type: ignore[attr-defined]
                "if {v}.__class__ is str:",
                f"    try: t_ = {fast}({{v}})",
                "    except json_fast_error_: t_ = {p}({v})",
                "    else:",
                "        if t_.__class__ is dict:",
                "            for i_ in t_.values():",
                "                if i_.__class__ is str and i_.startswith(SEALED_MARK):",
                "                    t_ = {p}({v})",
                "                    break",
                "    {v} = t_",
                "else: {v} = {p}({v})"], {**names, "SEALED_MARK": MARK})
        return process


def custom_index_text(value: Any) -> str:
    """The text a custom field's blind index is of: a text value itself, anything else its JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _seal_custom(cipher: Cipher, name: str, value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.startswith(MARK)):
        return value
    return cipher.seal(CUSTOM + name, json.dumps(value, ensure_ascii=False), index=custom_index_text(value))


def _open_custom(cipher: Cipher, name: str, value: Any) -> Any:
    if not isinstance(value, str) or not value.startswith(MARK):
        return value
    return json.loads(cipher.open(CUSTOM + name, value))


def sealed_custom(element: Any, name: str) -> Any:
    """``attributes.NAME`` as text, compared by blind index when ``custom.NAME`` is sealed."""
    return type_coerce(element, Sealed(CUSTOM + name, 0, 0))


def _equals(column: Any, field: str, value: Any) -> ColumnElement[bool]:
    if isinstance(value, ColumnElement) and not isinstance(value, BindParameter):
        return column.op("=")(value)  # type: ignore[no-any-return]
    # One bound value per possible key, made here (not when compiling) so that a cached
    # statement takes each new value: the blind index under every listed key is compared.
    keys = []
    for number in range(MAX_KEYS):
        if isinstance(value, BindParameter):
            keys.append(BindParameter(value.key if number == 0 else None, value.value, type_=SealedKey(field, number),
                                      unique=value.unique or number > 0, required=value.required and number == 0,
                                      callable_=value.callable))
        else:
            keys.append(BindParameter(None, value, type_=SealedKey(field, number), unique=True))
    return _SealedEquals(column, keys)


#: The bound parameters of :func:`bound_equals`: the value under each possible key.
BOUND_NAMES = tuple("value" if number == 0 else f"value_k{number}" for number in range(MAX_KEYS))


def bound_equals(column: Any) -> ColumnElement[bool]:
    """``column = :value`` for a statement built once (a point read), ``column`` sealed or not:
    each key's blind index is its own named parameter (:data:`BOUND_NAMES`), which the caller binds
    to the same value (:func:`bound_values`)."""
    field = column.type.field
    return _SealedEquals(column, [BindParameter(name, None, type_=SealedKey(field, number))
                                  for number, name in enumerate(BOUND_NAMES)])


def bound_values(value: Any) -> dict[str, Any]:
    """The parameters of a :func:`bound_equals` comparison with ``value``."""
    return dict.fromkeys(BOUND_NAMES, value)


def equals_value(condition: Any, column: Any) -> tuple[Any] | None:
    """``(value,)`` when ``condition`` is ``column`` (sealed) equal to one bound value, else None."""
    if isinstance(condition, _SealedEquals) and condition.column is column \
            and isinstance(condition.bound[0], BindParameter) and condition.bound[0].callable is None:
        return (condition.bound[0].value,)
    return None


def is_sealed_column(column: Any) -> bool:
    """Whether ``column`` compares as a sealed column (by blind index when its field is sealed)."""
    return isinstance(column.type, Sealed | SealedDate)


class _SealedEquals(ColumnElement[bool]):
    """``column = :value``, or with the engine's cipher the ranges over the value's blind
    index under each listed key."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement),
                           ("bound", InternalTraversal.dp_clauseelement_tuple)]
    # A comparison: typed Boolean, SQLite (no native booleans) would get "= 1" appended to it.
    type = NullType()  # type: ignore[assignment]

    def __init__(self, column: Any, bound: list[BindParameter[Any]]):
        self.column, self.bound = column, tuple(bound)


def lookup_key(value: Any, fold: bool) -> ColumnElement[str]:
    """The SQL of a look-up column's value (``customers.email_key``, ``phone_key``) for the stored
    ``value`` (a column or a bound value): a sealed value's blind index (``$e1$`` and 22
    characters), else the value, lower-cased when ``fold``.  The generated columns'
    expressions (``crmcore.store.tables.EMAIL_KEY_SQL`` / ``PHONE_KEY_SQL``) say the same in SQL
    text; a test holds the two together on every database."""
    plain = func.lower(value) if fold else value
    one: ColumnElement[int] = literal_column("1", Integer)
    mark: ColumnElement[int] = literal_column(str(len(MARK)), Integer)
    index: ColumnElement[int] = literal_column(str(len(MARK) + _INDEX), Integer)
    return case((func.substr(value, one, mark) == literal_column(f"'{MARK}'"), func.substr(value, one, index)),
                else_=plain)


def _lookup_column(column: Any) -> Any:
    """The indexed look-up column derived from ``column`` (``customers.email`` ->
    ``customers.email_key``, also of an alias of the table), or None."""
    name = getattr(column.type, "lookup", None)
    table = getattr(column, "table", None)
    if name is None or table is None or not hasattr(table, "c"):
        return None
    return table.c.get(name)


@compiles(_SealedEquals)
def _compile_sealed_equals(element: _SealedEquals, compiler: Any, **kw: Any) -> str:
    cipher = cipher_of(compiler.dialect)
    column, bound = element.column, element.bound
    field = bound[0].type.field  # type: ignore[attr-defined]
    lookup = _lookup_column(column)
    if cipher is None or not cipher.seals(field):
        if lookup is None:
            return str(compiler.process(column.op("=")(bound[0]), **kw))
        # The look-up column's index finds the candidates (the value's key, computed as the
        # database computes the column); the column itself decides, so the look-up finds exactly
        # what ``column = value`` finds (email_key is lower-cased: Zhang@ and zhang@ share it).
        key = lookup.op("=")(lookup_key(bound[0], column.type.fold))
        return "(" + str(compiler.process(and_(key, column.op("=")(bound[0])), **kw)) + ")"
    if lookup is not None:
        # A sealed value's look-up column is its blind index: equality with the value's index
        # under each listed key, on that column's index.  An equality is bytewise under every
        # deterministic collation, so no COLLATE "C" (which would forgo the index) is needed.
        keys = [lookup.op("=")(key) for key in bound[:cipher.key_count]]
        return "(" + str(compiler.process(or_(*keys), **kw)) + ")"
    if not getattr(compiler.dialect, "crm_bytewise", True):  # see check_collation
        column = column.collate("C")
    # Parenthesised: the ranges are one condition, also under NOT.
    ranges = [and_(column.op(">")(key), column.op("<")(key.concat(literal_column("'%'"))))
              for key in bound[:cipher.key_count]]
    return "(" + str(compiler.process(or_(*ranges), **kw)) + ")"


def seal_changes(dialect: Any, changes: Any) -> Any:
    """An audit record's ``{field: [before, after]}`` with the values of sealed fields sealed
    (the audit trail holds no readable phone number either), also inside nested values (a
    merge's before-state): see :func:`seal_tree`."""
    return seal_tree(dialect, changes)


def open_changes(dialect: Any, changes: Any) -> Any:
    """:func:`seal_changes` undone, for reading (values sealed with a key no longer listed stay sealed)."""
    return open_tree(dialect, changes)


def seal_tree(dialect: Any, data: Any) -> Any:
    """A JSON value in which the CRM copies a customer (audit values, a merge's before-state,
    a stored API response) with every value of a sealed field sealed: a text under a key named
    as a sealed field (``email``, ``phone``, ``birthday``, ``recipient``) and, in an
    ``attributes`` object, the sealed custom fields' values.  Already sealed values stay."""
    cipher = cipher_of(dialect)
    return data if cipher is None else _walk(cipher, data, None, "seal")


def open_tree(dialect: Any, data: Any) -> Any:
    """:func:`seal_tree` undone (a value sealed with a key no longer listed stays sealed)."""
    cipher = cipher_of(dialect)
    return data if cipher is None else _walk(cipher, data, None, "open")


def reseal_tree(cipher: Cipher, data: Any) -> Any:
    """:func:`seal_tree` with every sealed value not sealed with the first key sealed again."""
    return _walk(cipher, data, None, "reseal")


def _walk(cipher: Cipher, value: Any, field: str | None, mode: str) -> Any:
    if isinstance(value, dict):
        if field == "attributes":  # custom fields: only the sealed ones (or sealed before)
            return {k: _walk(cipher, v, CUSTOM + k, mode) if isinstance(k, str) and (
                cipher.seals_custom(k) or (isinstance(v, str) and v.startswith(MARK))) else v
                for k, v in value.items()}
        return {k: _walk(cipher, v, k, mode) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(cipher, v, field, mode) for v in value]
    if field is None or value is None or isinstance(value, bool) and not field.startswith(CUSTOM):
        return value
    is_custom = field.startswith(CUSTOM)
    stored = isinstance(value, str) and value.startswith(MARK)
    if mode == "open":
        if not stored:
            return value
        opened = _open_quietly(cipher, field, value)
        return json.loads(opened) if is_custom and opened is not value else opened
    if stored:
        if mode == "seal" or cipher.current(value):
            return value
        try:
            value = cipher.open(field, value)
        except ConfigError:
            return value
        value = json.loads(value) if is_custom else value
    elif not (cipher.seals(field) and (is_custom or isinstance(value, str))):
        return value
    if is_custom:
        return cipher.seal(field, json.dumps(value, ensure_ascii=False), index=custom_index_text(value))
    return cipher.seal(field, value)


def _open_quietly(cipher: Cipher, field: str, value: Any) -> Any:
    if not isinstance(value, str) or not value.startswith(MARK):
        return value
    try:
        return cipher.open(field, value)
    except ConfigError:
        return value

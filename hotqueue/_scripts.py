"""The server side of reliable delivery (see ``hotqueue.reliable``): the keys
of a queue, all in its main key's cluster slot, and the Lua scripts that move
its messages, each in one atomic step."""

import hashlib
import json
import time
from typing import Any, AnyStr, NamedTuple, Optional, Sequence, Union

import resp

AnyClient = Union[resp.Client, resp.ClusterClient]

#: A dead letter's reason is cut to this many characters: a huge exception
#: message must not bloat the dead-letter list.
MAX_REASON = 2000


# -- keys ------------------------------------------------------------------------


class Keys(NamedTuple):
    """The Redis keys of one queue in reliable mode (the table in ``hotqueue.reliable``)."""

    main: str
    prefix: str  # "{main key}:" or "{tag}:length:main key:" — every other key starts with it

    @property
    def consumers(self) -> str:
        """The set of consumer ids."""
        return self.prefix + "consumers"

    @property
    def attempts(self) -> str:
        """The hash of failed-attempt counts, keyed by the SHA-1 of a message."""
        return self.prefix + "attempts"

    @property
    def dead(self) -> str:
        """The dead-letter list."""
        return self.prefix + "dead"

    @property
    def deliveries(self) -> str:
        """The hash of the numbers of the deliveries held, keyed by consumer id."""
        return self.prefix + "deliveries"

    def processing(self, consumer_id: AnyStr) -> AnyStr:
        """The processing list of one consumer (``bytes`` for an id given as
        ``bytes``, as the set of consumers gives it back)."""
        return self._of_consumer("processing:", consumer_id)

    def heartbeat(self, consumer_id: AnyStr) -> AnyStr:
        """The heartbeat key of one consumer (``bytes`` for an id given as ``bytes``)."""
        return self._of_consumer("heartbeat:", consumer_id)

    def _of_consumer(self, kind: str, consumer_id: AnyStr) -> AnyStr:
        # An id read from the set may not be UTF-8 (written by another
        # client): as bytes, its keys are still exactly those it wrote.
        if isinstance(consumer_id, bytes):
            return (self.prefix + kind).encode() + consumer_id
        return self.prefix + kind + consumer_id


def _hash_tag(key: str) -> Optional[str]:
    # Redis Cluster hashes only the first "{…}" when it is not empty.
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1:end]


def keys_for(main_key: str) -> Keys:
    """The keys of the queue whose list is ``main_key``, all in its cluster slot.

    >>> keys_for("hotqueue:jobs").dead
    '{hotqueue:jobs}:dead'
    >>> keys_for("hotqueue:{tenant}jobs").dead
    '{tenant}:21:hotqueue:{tenant}jobs:dead'

    A tag taken from the name may be in other queues' names too (that is
    what it is for: a tenant's queues on one node), so the main key follows
    it, after its length (which keeps ``{t}a:processing`` from reading as
    ``{t}a`` and a suffix): two queues never share a key.

    :raises ValueError: ``main_key`` has a ``}`` outside a hash tag, so no other
        key can be made to share its slot.
    """
    tag = _hash_tag(main_key)
    if tag is None:
        if "}" in main_key:
            raise ValueError(
                f"reliable mode cannot keep the keys of {main_key!r} in one cluster slot: "
                "the name has a '}' outside a {hash tag}"
            )
        return Keys(main_key, "{" + main_key + "}:")
    return Keys(main_key, f"{{{tag}}}:{len(main_key)}:{main_key}:")


# -- scripts ---------------------------------------------------------------------

# Redis does not roll a script back when a command in it fails, so every script
# checks what could fail (types, the JSON it is given) before its first write.
_CHECK_LISTS = """
for _, key in ipairs(LISTS) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'list' and t ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. key .. ' is not a list')
  end
end
"""


class Script:
    """A Lua script run by ``EVALSHA``, loaded with ``EVAL`` when the server
    does not know it yet (after a restart or ``SCRIPT FLUSH``)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: AnyClient, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except resp.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return client.execute("EVAL", self.source, len(keys), *keys, *args)


# Each take gives its message a number, kept in the hash ``deliveries`` under
# the consumer's id until the message is settled, and every settlement names
# it: an ack, a failure or a give-back held up in the network, and sent again,
# that lands after the consumer has taken its next message (maybe with the
# same bytes) finds another number there and does nothing.
_CHECK_DELIVERIES = """
local t = redis.call('TYPE', KEYS[DELIVERIES])['ok']
if t ~= 'hash' and t ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[DELIVERIES] .. ' is not a hash')
end
"""


def _settlement(check: str, body: str) -> Script:
    # A script that acts only on the delivery it names (ARGV[1] the consumer
    # id, ARGV[2] the number): 0 when that number is no longer the consumer's.
    return Script(check + """
if redis.call('HGET', KEYS[DELIVERIES], ARGV[1]) ~= ARGV[2] then return 0 end
""" + body)


# KEYS: main, processing, heartbeat, consumers, deliveries. ARGV: consumer id.
# Moves the head of the queue into the processing list, only while the
# consumer counts as alive (its heartbeat is there and it is in the set), so
# that recovery, which empties a list in the same script as it forgets its
# consumer (as RETIRE does), always finds what a take moved: one held up in
# the network past a recovery moves nothing. A consumer that takes holds
# nothing it knows of: a message already in its list (a take whose reply was
# lost, or that landed late; one never settled) is delivered again, under the
# number it has: the consumer first sends again a settlement whose outcome it
# does not know (see Consumer.fetch), so no settlement still on its way names
# a message delivered again. Returns {message, number} (the number as bytes,
# sent back as they are), nil when the queue is empty, or 0 when the consumer
# is not alive.
TAKE = Script("local DELIVERIES = 5" + _CHECK_DELIVERIES + """
-- HINCRBY below must not fail after a move: a number it takes, far from overflowing.
local last = redis.call('HGET', KEYS[5], '')
if last and not (last == '0' or string.match(last, '^[1-9]%d*$') and #last <= 18) then
  return redis.error_reply('ERR the last delivery number in ' .. KEYS[5] .. ' is not a number')
end
if redis.call('EXISTS', KEYS[3]) == 0 or redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 0 then return 0 end
local msg = redis.call('LINDEX', KEYS[2], 0)
if msg then
  -- One held at a time: more (a consumer of another version) go back.
  while redis.call('LLEN', KEYS[2]) > 1 do redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT') end
  local number = redis.call('HGET', KEYS[5], ARGV[1])
  if number then return {msg, number} end
else
  msg = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not msg then return nil end
end
-- The number as Redis writes it, a string: a Lua number would be a double.
redis.call('HINCRBY', KEYS[5], '', 1)  -- '' is no consumer's id
local number = redis.call('HGET', KEYS[5], '')
redis.call('HSET', KEYS[5], ARGV[1], number)
return {msg, number}
""")

# Each start of a consumer is a run, numbered from the counter that numbers
# deliveries (so later runs have larger numbers), and its heartbeat says which
# run wrote it. What a run sends when it starts or stops (the recovery of its
# own id, RETIRE) may be held up in the network and land after the next run
# of the same id has registered and taken a message: it then finds a larger
# run in the heartbeat and leaves that run alone. run_of(heartbeat): the run
# its value names; 0 for one without (an older version's, or not ours).
_RUN_OF = """
local function run_of(heartbeat)
  if redis.call('TYPE', heartbeat)['ok'] ~= 'string' then return 0 end
  local ok, value = pcall(cjson.decode, redis.call('GET', heartbeat))
  if ok and type(value) == 'table' and type(value['run']) == 'number' then return value['run'] end
  return 0
end
"""

# KEYS: main, processing, heartbeat, consumers, deliveries. ARGV: consumer id,
# run. A consumer that stops: what its list holds goes back to the head of the
# queue, and it leaves the set, in one step, so that no take can land between
# the two and leave a message in the list of a consumer nobody knows any
# more; unless a later run of the same id has registered since. Returns how
# many messages went back.
RETIRE = Script("local DELIVERIES = 5" + _CHECK_DELIVERIES + "local LISTS = {KEYS[1], KEYS[2]}" + _CHECK_LISTS
                + _RUN_OF + """
if run_of(KEYS[3]) > tonumber(ARGV[2]) then return 0 end
redis.call('SREM', KEYS[4], ARGV[1])
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT') do moved = moved + 1 end
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[5], ARGV[1])
return moved
""")

# KEYS: processing, main, deliveries. ARGV: consumer id, number, message.
# Gives the delivery back to the head of the queue unhandled. Returns 1, or 0.
RELEASE = _settlement(
    "local DELIVERIES = 3" + _CHECK_DELIVERIES + "local LISTS = {KEYS[1], KEYS[2]}" + _CHECK_LISTS, """
if not redis.call('LPOS', KEYS[1], ARGV[3]) then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do end
return 1
""")

# KEYS: processing, attempts, deliveries. ARGV: consumer id, number, message.
# Returns 1, or 0 when the delivery was no longer held (recovered while its
# handler ran, or settled already). Clearing the count comes after the one
# write that matters, so it may not fail (pcall): a foreign value at attempts
# leaves the ack done.
ACK = _settlement("local DELIVERIES = 3" + _CHECK_DELIVERIES, """
local removed = redis.call('LREM', KEYS[1], 1, ARGV[3])
if removed > 0 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.pcall('HDEL', KEYS[2], redis.sha1hex(ARGV[3]))
end
return removed
""")

# KEYS: processing, main, dead, attempts, deliveries. ARGV: consumer id,
# number, message, max_attempts, meta (a JSON object). Returns {attempts, 1
# if dead-lettered else 0}, or 0 when the delivery was no longer held.
FAIL = _settlement(
    "local DELIVERIES = 5" + _CHECK_DELIVERIES + "local LISTS = {KEYS[2], KEYS[3]}" + _CHECK_LISTS, """
local meta = cjson.decode(ARGV[5])
if not redis.call('LPOS', KEYS[1], ARGV[3]) then return 0 end
local digest = redis.sha1hex(ARGV[3])
-- Counted before the message leaves: HINCRBY can fail (a foreign value).
local attempts = redis.call('HINCRBY', KEYS[4], digest, 1)
redis.call('LREM', KEYS[1], 1, ARGV[3])
redis.call('HDEL', KEYS[5], ARGV[1])
if attempts < tonumber(ARGV[4]) then
  redis.call('LPUSH', KEYS[2], ARGV[3])
  return {attempts, 0}
end
redis.call('HDEL', KEYS[4], digest)
meta['attempts'] = attempts
redis.call('RPUSH', KEYS[3], cjson.encode(meta) .. '\\n' .. ARGV[3])
return {attempts, 1}
""")

# KEYS: main, consumers, attempts, dead, deliveries, then (processing,
# heartbeat) of each consumer. ARGV: max_attempts, meta, run, then the
# consumer ids. Every consumer whose heartbeat is gone gets its messages moved
# back to the head of the queue (or to the dead letters) and leaves the set;
# one whose processing key is not a list (written by something else) is left
# as it is, rather than fail the others' recovery part-way. With a run other
# than 0 (a consumer starting: its own id, whose earlier run may have been
# killed) a heartbeat counts only when a run as late or later wrote it.
# Returns {requeued, dead}.
RECOVER = Script("local DELIVERIES = 5" + _CHECK_DELIVERIES + "local LISTS = {KEYS[1], KEYS[4]}" + _CHECK_LISTS
                 + _RUN_OF + """
local meta = cjson.decode(ARGV[2])
local max_attempts = tonumber(ARGV[1])
local run = tonumber(ARGV[3])
local requeued, dead = 0, 0
for i = 4, #ARGV do
  local processing, heartbeat = KEYS[2 * i - 2], KEYS[2 * i - 1]
  local kind = 'alive'
  if redis.call('EXISTS', heartbeat) == 0 or run > 0 and run_of(heartbeat) < run then
    kind = redis.call('TYPE', processing)['ok']
  end
  if kind == 'list' or kind == 'none' then
    while true do
      local msg = redis.call('LINDEX', processing, -1)
      if not msg then break end
      local digest = redis.sha1hex(msg)
      -- Counted before the message leaves: HINCRBY can fail (a foreign value).
      local attempts = redis.call('HINCRBY', KEYS[3], digest, 1)
      redis.call('RPOP', processing)
      if attempts < max_attempts then
        redis.call('LPUSH', KEYS[1], msg)
        requeued = requeued + 1
      else
        redis.call('HDEL', KEYS[3], digest)
        meta['attempts'] = attempts
        meta['consumer'] = ARGV[i]
        redis.call('RPUSH', KEYS[4], cjson.encode(meta) .. '\\n' .. msg)
        dead = dead + 1
      end
    end
    redis.call('SREM', KEYS[2], ARGV[i])
    redis.call('HDEL', KEYS[5], ARGV[i])
  end
end
return {requeued, dead}
""")

# KEYS: dead, main. Moves every dead letter's message to the tail of the queue.
# An entry whose first line is not "{…}" was not written by hotqueue: all of
# it is the message (as ``is_dead_letter_meta`` tells ``peek``).
REQUEUE_DEAD = Script("local LISTS = {KEYS[1], KEYS[2]}" + _CHECK_LISTS + """
local moved = 0
while true do
  local entry = redis.call('LPOP', KEYS[1])
  if not entry then break end
  local cut = string.find(entry, '\\n', 1, true)
  if cut and string.sub(entry, 1, 1) == '{' and string.sub(entry, cut - 1, cut - 1) == '}' then
    entry = string.sub(entry, cut + 1)
  end
  redis.call('RPUSH', KEYS[2], entry)
  moved = moved + 1
end
return moved
""")

# KEYS: dead. Deletes the dead letters; returns how many there were. A value
# of another type is left alone (WRONGTYPE), not deleted with them.
CLEAR_DEAD = Script("local LISTS = {KEYS[1]}" + _CHECK_LISTS + """
local count = redis.call('LLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return count
""")


def is_dead_letter_meta(line: bytes) -> bool:
    """Whether ``line``, the first line of a dead letter holding a newline, is
    hotqueue's JSON object (the message follows it) rather than the start of
    an entry written by something else (all of which is the message)."""
    return line[:1] == b"{" and line[-1:] == b"}"


def meta(reason: str, consumer_id: str) -> str:
    """The JSON object a script writes into a dead letter, ``attempts`` aside."""
    # JSON escapes control characters: the JSON line of a dead letter never
    # holds a raw newline; backslashreplace: a lone surrogate would make the script's JSON decoder fail.
    reason = reason[:MAX_REASON].encode("utf-8", "backslashreplace").decode("utf-8")
    return json.dumps({"reason": reason, "consumer": consumer_id, "failed_at": time.time()})

//! Love in Redis, shared by every instance (`--redis-url`).
//!
//! Each group-committed batch is one Lua script ([`APPLY`], sent with
//! EVALSHA): Redis runs a script atomically, so the batch's taps are counted
//! all together or not at all. Per room, a hash holds each client's last
//! cumulative count; one hash holds every room's total. A client that
//! tapped on one instance and resends on another is counted once, since the
//! counts live in Redis, not in the instance.
//!
//! An ack means the taps are durable only if Redis writes every command to
//! its append-only file before replying: [`RedisLove::open`] checks
//! `appendonly yes` and `appendfsync always` with `CONFIG GET` and refuses to
//! start otherwise, unless the operator accepts the risk with
//! `--redis-unsafe-love`.
//!
//! Idle ledgers (`--love-retention`) are found in a sorted set of every
//! ledger by its last love and folded by a second script ([`FOLD`]), which
//! checks each again before deleting it. A ledger from before epochs enters
//! the set at its next love; until then it is kept.
//!
//! The writer thread is a plain thread, so this backend uses the blocking
//! client. When Redis goes away, a batch is retried until Redis answers
//! again (up to [`RETRY_FOR`]): the taps get no ack meanwhile, and since
//! counting is by cumulative count, running a batch twice (if Redis applied
//! it but the reply was lost) counts nothing twice.

use super::{LoveBackend, StoreError, Tap, TapOutcome, new_epoch};
use redis::{Connection, Script, Value};
use shared::RoomName;
use shared::protocol::MAX_LOVE_STEP;
use std::time::{Duration, Instant};

/// The hash of every room's love total (field: room name).
const TOTALS: &str = "heartsync:love:total";

/// How long one Redis call may take before the connection is dropped and
/// made again.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a batch is retried while Redis is away before its taps are
/// answered with an error (the clients send them again later).
pub const RETRY_FOR: Duration = Duration::from_secs(60);

/// Pause between attempts while Redis is away.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// The sorted set of every ledger by its last love (member `room client`,
/// score the server's clock in ms), so idle ones are found by score.
const ACTIVE: &str = "heartsync:love:active";

/// Applies a batch of taps atomically, by the rule of [`super::decide`].
///
/// KEYS\[1\] is the totals hash, KEYS\[2\] the activity set, and KEYS\[2 + i\]
/// the ledger hash of tap i's room (field: client, value `epoch:last`, or
/// only `last` for a ledger from before epochs, epoch 1). ARGV\[1\] is
/// `MAX_LOVE_STEP`; then each tap gives its room, client, count, epoch,
/// limit, whether it may start a ledger (1 or 0), its time (the epoch of a
/// new ledger it names none for) and the time after which a named epoch
/// cannot have been folded. Returns, per tap, `{code, a, total, epoch, created}`:
/// code 1 counted (a: added), 0 too big (a: last), 2 folded, 3 no ledger.
/// Counts and epochs are at most 2^53 (the protocol refuses more), so
/// Lua's doubles hold them exactly; epochs are compared as text. A replay
/// writes nothing (a ledger is active when it counts).
const APPLY: &str = r"
local max_step = tonumber(ARGV[1])
local out = {}
local function total(room)
  return tonumber(redis.call('HGET', KEYS[1], room) or '0')
end
local function count(room, added)
  if added > 0 then return redis.call('HINCRBY', KEYS[1], room, added) end
  return total(room)
end
for i = 1, #KEYS - 2 do
  local a = 1 + 8 * (i - 1)
  local room, client, seq_text, epoch = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local seq, limit = tonumber(seq_text), tonumber(ARGV[a + 5])
  local may_create, at = ARGV[a + 6] == '1', ARGV[a + 7]
  local fresh = epoch ~= '0' and tonumber(epoch) > tonumber(ARGV[a + 8])
  local ledgers = KEYS[i + 2]
  local member = room .. ' ' .. client
  local row = redis.call('HGET', ledgers, client)
  local row_epoch, last_text = nil, nil
  if row then
    local colon = string.find(row, ':', 1, true)
    row_epoch, last_text = '1', row
    if colon then
      row_epoch, last_text = string.sub(row, 1, colon - 1), string.sub(row, colon + 1)
    end
  end
  local start = false
  if row and (epoch == '0' or epoch == row_epoch or fresh) then
    local last = tonumber(last_text)
    local added = seq - last
    if added < 0 then added = 0 end
    if added > limit then
      out[i] = {0, last, 0, 0, 0}
    else
      if added > 0 then
        redis.call('HSET', ledgers, client, row_epoch .. ':' .. seq_text)
        local active = at
        if tonumber(row_epoch) > tonumber(at) then active = row_epoch end
        redis.call('ZADD', KEYS[2], active, member)
      end
      out[i] = {1, added, count(room, added), tonumber(row_epoch), 0}
    end
  elseif row or (epoch ~= '0' and not fresh) then
    out[i] = {2, 0, total(room), 0, 0}
  elseif seq == 0 then
    out[i] = {1, 0, total(room), 0, 0}
  else
    start = true
  end
  if start then
    local new_epoch = epoch
    if epoch == '0' then new_epoch = at end
    if not may_create then
      out[i] = {3, 0, 0, 0, 0}
    elseif seq > limit and not (epoch == '0' and seq > max_step) then
      out[i] = {0, 0, 0, 0, 0}
    else
      local added = seq
      if epoch == '0' and seq > max_step then added = 0 end
      redis.call('HSET', ledgers, client, new_epoch .. ':' .. seq_text)
      -- Active at the later of now and its epoch (see super::active_at).
      local active = at
      if tonumber(new_epoch) > tonumber(at) then active = new_epoch end
      redis.call('ZADD', KEYS[2], active, member)
      out[i] = {1, added, count(room, added), tonumber(new_epoch), 1}
    end
  end
end
return out
";

/// Folds idle ledgers atomically: KEYS\[1\] is the activity set, KEYS\[1 + i\]
/// the ledger hash of ARGV\[1 + i\]'s room; ARGV\[1\] the time (ms) before
/// which a ledger is idle, ARGV\[1 + i\] a member (`room client`) found
/// idle. Each is checked again here, so a tap that came in between keeps
/// its ledger. Returns how many were folded.
const FOLD: &str = r"
local before = tonumber(ARGV[1])
local folded = 0
for i = 2, #ARGV do
  local member = ARGV[i]
  local at = redis.call('ZSCORE', KEYS[1], member)
  if at and tonumber(at) < before then
    local space = string.find(member, ' ', 1, true)
    redis.call('HDEL', KEYS[i], string.sub(member, space + 1))
    redis.call('ZREM', KEYS[1], member)
    folded = folded + 1
  end
end
return folded
";

/// The hash of each client's last count in `room`.
fn seqs_key(room: &RoomName) -> String {
    format!("heartsync:love:seq:{room}")
}

/// Love totals in Redis.
pub struct RedisLove {
    client: redis::Client,
    /// The connection, made again after a failure.
    connection: Option<Connection>,
    script: Script,
    /// [`FOLD`].
    fold: Script,
}

impl std::fmt::Debug for RedisLove {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLove").field("connected", &self.connection.is_some()).finish()
    }
}

impl RedisLove {
    /// Connects to Redis at `url` within `connect_timeout` and checks that it
    /// makes every write durable before replying (skipped when `unsafe_love`).
    pub fn open(
        url: &str,
        connect_timeout: Duration,
        unsafe_love: bool,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Incompatible(format!("bad --redis-url {url:?}: {e}")))?;
        let mut store =
            Self { client, connection: None, script: Script::new(APPLY), fold: Script::new(FOLD) };
        let connection =
            connect(&store.client, &mut store.connection, connect_timeout).map_err(|e| {
                StoreError::Incompatible(format!("cannot reach Redis for love at {url}: {e}"))
            })?;
        let appendonly = config_get(connection, "appendonly");
        let appendfsync = config_get(connection, "appendfsync");
        match (appendonly, appendfsync) {
            (Ok(only), Ok(fsync)) if only == "yes" && fsync == "always" => {}
            _ if unsafe_love => {
                tracing::warn!(
                    "Redis does not fsync every write (appendonly yes + appendfsync always): \
                     acknowledged love may be lost if Redis crashes (--redis-unsafe-love)"
                );
            }
            (Ok(only), Ok(fsync)) => {
                return Err(StoreError::Incompatible(format!(
                    "Redis at {url} runs with appendonly {only} and appendfsync {fsync}: an \
                     acknowledged love tap could be lost if Redis crashes. Set `appendonly yes` \
                     and `appendfsync always` in redis.conf (or CONFIG SET), or pass \
                     --redis-unsafe-love to accept the risk"
                )));
            }
            (Err(e), _) | (_, Err(e)) => {
                return Err(StoreError::Incompatible(format!(
                    "cannot check that Redis at {url} fsyncs every write (CONFIG GET failed: \
                     {e}): configure it with `appendonly yes` and `appendfsync always` and allow \
                     CONFIG GET, or pass --redis-unsafe-love to accept the risk of losing \
                     acknowledged love"
                )));
            }
        }
        Ok(store)
    }

    /// Runs `call` on a live connection, reconnecting and retrying while
    /// Redis is unreachable (up to [`RETRY_FOR`]). `call` must be safe to run
    /// twice: a reply lost on the way back does not mean the command failed.
    fn with_retry<T>(
        &mut self,
        mut call: impl FnMut(&mut Connection, &Script) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let mut warned = false;
        loop {
            let result = match connect(&self.client, &mut self.connection, CALL_TIMEOUT) {
                Ok(connection) => call(connection, &self.script),
                Err(error) => Err(error),
            };
            match result {
                Ok(value) => {
                    if warned {
                        tracing::info!("Redis is back: love is saved again");
                    }
                    return Ok(value);
                }
                Err(error) if is_unreachable(&error) && started.elapsed() < RETRY_FOR => {
                    // The connection may be half-dead; make a new one.
                    self.connection = None;
                    if !warned {
                        tracing::warn!(%error, "Redis is unreachable: love waits for it");
                        warned = true;
                    }
                    std::thread::sleep(RETRY_DELAY);
                }
                Err(error) => {
                    self.connection = None;
                    return Err(StoreError::from(error));
                }
            }
        }
    }
}

/// The live connection in `slot`, made if there is none.
fn connect<'a>(
    client: &redis::Client,
    slot: &'a mut Option<Connection>,
    within: Duration,
) -> Result<&'a mut Connection, redis::RedisError> {
    match slot {
        Some(connection) => Ok(connection),
        None => {
            let connection = client.get_connection_with_timeout(within)?;
            connection.set_read_timeout(Some(CALL_TIMEOUT))?;
            connection.set_write_timeout(Some(CALL_TIMEOUT))?;
            Ok(slot.insert(connection))
        }
    }
}

/// Whether `error` means Redis could not be reached (worth retrying), as
/// opposed to Redis refusing the command.
fn is_unreachable(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        // Loading the AOF after a restart: Redis answers, but not yet.
        || error.code() == Some("LOADING")
}

/// `CONFIG GET name`'s value.
fn config_get(connection: &mut Connection, name: &str) -> redis::RedisResult<String> {
    let reply: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(connection)?;
    Ok(reply.get(1).cloned().unwrap_or_default())
}

impl LoveBackend for RedisLove {
    fn apply(&mut self, taps: &[Tap]) -> Result<Vec<TapOutcome>, StoreError> {
        let reply: Vec<(u8, u64, u64, u64, u8)> = self.with_retry(|connection, script| {
            let mut invocation = script.key(TOTALS);
            invocation.key(ACTIVE).arg(MAX_LOVE_STEP);
            for tap in taps {
                invocation.key(seqs_key(&tap.room));
                invocation
                    .arg(tap.room.as_str())
                    .arg(tap.client.as_str())
                    .arg(tap.seq)
                    .arg(tap.epoch)
                    .arg(tap.limit)
                    .arg(u8::from(tap.may_create))
                    .arg(new_epoch(tap.at_ms))
                    .arg(tap.fresh_after_ms);
            }
            invocation.invoke(connection)
        })?;
        if reply.len() != taps.len() {
            return Err(StoreError::Incompatible(format!(
                "Redis answered {} outcomes for {} taps",
                reply.len(),
                taps.len()
            )));
        }
        Ok(reply
            .into_iter()
            .map(|(code, a, total, epoch, created)| match code {
                1 => TapOutcome::Counted { added: a, total, epoch, created: created == 1 },
                2 => TapOutcome::Folded { total },
                3 => TapOutcome::NoLedger,
                _ => TapOutcome::TooBig { last: a },
            })
            .collect())
    }

    fn fold(&mut self, idle_before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let fold = self.fold.clone();
        self.with_retry(|connection, _| {
            let idle: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(ACTIVE)
                .arg("-inf")
                .arg(format!("({idle_before_ms}"))
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query(connection)?;
            if idle.is_empty() {
                return Ok(0);
            }
            let mut invocation = fold.key(ACTIVE);
            invocation.arg(idle_before_ms);
            for member in &idle {
                // Members are `room client`; neither holds a space.
                let room = member.split(' ').next().unwrap_or_default();
                invocation.key(format!("heartsync:love:seq:{room}")).arg(member);
            }
            invocation.invoke(connection)
        })
    }

    fn total(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        // One attempt: a room opening while Redis is away opens without its
        // total rather than wait a minute.
        let connection = connect(&self.client, &mut self.connection, CALL_TIMEOUT)?;
        let total: Result<Option<u64>, _> =
            redis::cmd("HGET").arg(TOTALS).arg(room.as_str()).query(connection);
        match total {
            Ok(total) => Ok(total.unwrap_or(0)),
            Err(error) => {
                self.connection = None;
                Err(error.into())
            }
        }
    }

    fn check_writable(&mut self) -> Result<(), StoreError> {
        // One attempt: `/readyz` wants to know now, not in a minute.
        let connection =
            connect(&self.client, &mut self.connection, CALL_TIMEOUT).map_err(StoreError::from)?;
        let pong: Result<Value, _> = redis::cmd("PING").query(connection);
        if let Err(error) = pong {
            self.connection = None;
            return Err(StoreError::from(error));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_refused_with_a_clear_message() {
        let error =
            RedisLove::open("not a url", Duration::from_secs(1), false).unwrap_err().to_string();
        assert!(error.contains("bad --redis-url"), "{error}");
    }

    #[test]
    fn an_unreachable_redis_is_refused_quickly() {
        let started = Instant::now();
        let error = RedisLove::open("redis://127.0.0.1:1/0", Duration::from_secs(1), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot reach Redis"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

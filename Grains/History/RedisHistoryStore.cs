using System.Buffers.Binary;
using System.Globalization;
using StackExchange.Redis;

namespace OrleansPush.Grains.History;

/// <summary>
/// History in Redis: per topic a hash (<c>epoch</c>, <c>head</c>, and <c>latest</c>, the latest value's member when the
/// topic has one, see <see cref="LatestChange"/>), a sorted set of messages scored by seq, and a string
/// per idempotency key (<c>seq epoch</c>, expiring with the dedupe window), all under one hash tag so a Redis Cluster
/// keeps them on one shard. An append is one Lua script (one round trip, atomic): it checks the stored epoch and head
/// (the compare-and-set), starts the epoch when nothing is stored, adds the messages and their keys, trims to the
/// bound, drops expired messages and refreshes the expiries: the messages live a TTL after the last append, the epoch
/// and head <see cref="HistoryBounds.PositionLifetime"/> (then the topic starts over in a new epoch). Durability is Redis's: run it with <c>appendonly yes</c> for acknowledged publishes
/// to survive a Redis restart.
/// </summary>
public sealed class RedisHistoryStore(IConnectionMultiplexer redis, string prefix) : IHistoryStore
{
    // KEYS: meta, messages, then one per idempotency key. ARGV: epoch, first seq, head, max count, ttl ms, position
    // lifetime ms, dedupe window ms, oldest allowed publish time ms, number of messages n, the new latest value's member
    // ('' to drop it, 'K' to keep it; a member is longer), then n score/member pairs, then the seq of each idempotency key. Returns {1} when applied, {0, stored epoch or '', stored head} when the
    // stored head is not first seq - 1.
    private const string AppendScript = """
        local stored = redis.call('HMGET', KEYS[1], 'epoch', 'head')
        if stored[1] then
          if stored[1] ~= ARGV[1] or tonumber(stored[2]) ~= tonumber(ARGV[2]) - 1 then
            return { 0, stored[1], stored[2] }
          end
        else
          if tonumber(ARGV[2]) ~= 1 then
            return { 0, '', '0' }
          end
          redis.call('DEL', KEYS[2])
          redis.call('HDEL', KEYS[1], 'latest')
        end
        redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'head', ARGV[3])
        if ARGV[10] == '' then
          redis.call('HDEL', KEYS[1], 'latest')
        elseif ARGV[10] ~= 'K' then
          redis.call('HSET', KEYS[1], 'latest', ARGV[10])
        end
        local n = tonumber(ARGV[9])
        for i = 11, 10 + 2 * n, 2 do
          redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1])
        end
        local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
        if extra > 0 then
          redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
        end
        -- Expired messages leave from the front (publish times rise with seq): the published-at ms are member bytes
        -- 10-16, big-endian. At most 1,000 per append.
        local oldest = tonumber(ARGV[8])
        for _ = 1, 1000 do
          local first = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
          if not first then
            break
          end
          local at = 0
          for b = 10, 16 do
            at = at * 256 + string.byte(first, b)
          end
          if at >= oldest then
            break
          end
          redis.call('ZREMRANGEBYRANK', KEYS[2], 0, 0)
        end
        for k = 3, #KEYS do
          redis.call('SET', KEYS[k], ARGV[10 + 2 * n + k - 2] .. ' ' .. ARGV[1], 'PX', ARGV[7], 'NX')
        end
        redis.call('PEXPIRE', KEYS[2], ARGV[5])
        redis.call('PEXPIRE', KEYS[1], ARGV[6])
        return { 1 }
        """;

    // KEYS: meta. ARGV: epoch, head. Drops the latest value when the stored epoch and head are these. Returns {1} when
    // done or nothing is stored, {0, stored epoch, stored head} otherwise.
    private const string ClearLatestScript = """
        local stored = redis.call('HMGET', KEYS[1], 'epoch', 'head')
        if not stored[1] then
          return { 1 }
        end
        if stored[1] ~= ARGV[1] or tonumber(stored[2]) ~= tonumber(ARGV[2]) then
          return { 0, stored[1], stored[2] }
        end
        redis.call('HDEL', KEYS[1], 'latest')
        return { 1 }
        """;

    // KEYS: meta, messages. ARGV: max count. Returns epoch, head, the latest message's member ('' when none is kept),
    // then the newest members oldest first.
    private const string LoadScript = """
        local meta = redis.call('HMGET', KEYS[1], 'epoch', 'head', 'latest')
        if not meta[1] then
          return {}
        end
        local members = redis.call('ZRANGE', KEYS[2], -tonumber(ARGV[1]), -1)
        local result = { meta[1], meta[2], meta[3] or '' }
        for i = 1, #members do
          result[#result + 1] = members[i]
        end
        return result
        """;

    /// <summary>The member header: seq (8 bytes), flags (1 byte; bit 0: binary payload, bit 1: properties follow),
    /// published-at ms (7 bytes). Members written before the flags existed have a zero there (an 8-byte timestamp whose top
    /// byte is zero), so they read as JSON without properties. With bit 1, the message's properties come next (a 4-byte
    /// big-endian length, then the bytes), then the payload.</summary>
    private const int HeaderBytes = 16;
    private const byte BinaryFlag = 1;
    private const byte PropertiesFlag = 2;

    public async Task<StoredHistory?> LoadAsync(string topic, HistoryBounds bounds, CancellationToken cancellationToken = default)
    {
        var (meta, messages) = Keys(topic);
        var result = (RedisResult[]?)await redis.GetDatabase().ScriptEvaluateAsync(LoadScript, [meta, messages], [Math.Max(1, bounds.MaxCount)]);
        if (result is null || result.Length < 3)
        {
            return null;
        }

        var epoch = (string)result[0]!;
        var head = (long)result[1];
        var latestMember = (byte[])result[2]!;
        var latest = latestMember.Length == 0 ? null : Decode(topic, epoch, latestMember);
        var oldest = bounds.OldestAllowedUnixMs(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        var list = new List<TopicMessage>(result.Length - 3);
        for (var i = 3; i < result.Length; i++)
        {
            var m = Decode(topic, epoch, (byte[])result[i]!);
            if (m.PublishedAtUnixMs >= oldest)
            {
                list.Add(m);
            }
        }

        return new StoredHistory(epoch, head, bounds.MaxCount <= 0 ? [] : HistoryRun.EndingAt(head, list))
        {
            Latest = latest?.Seq <= head ? latest : null,
        };
    }

    public async Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, IReadOnlyList<IdempotencyKey> keys, HistoryBounds bounds,
        LatestChange latest, CancellationToken cancellationToken = default)
    {
        if (messages.Count == 0)
        {
            return;
        }

        var (meta, set) = Keys(topic);
        var storedKeys = bounds.DedupeWindow > TimeSpan.Zero ? keys : [];
        var pairs = bounds.MaxCount > 0 ? messages.Count : 0;
        var redisKeys = new RedisKey[2 + storedKeys.Count];
        redisKeys[0] = meta;
        redisKeys[1] = set;
        var args = new RedisValue[10 + (2 * pairs) + storedKeys.Count];
        args[0] = epoch;
        args[1] = messages[0].Seq;
        args[2] = messages[^1].Seq;
        args[3] = Math.Max(0, bounds.MaxCount);
        args[4] = (long)Math.Max(1, bounds.Ttl.TotalMilliseconds);
        args[5] = (long)bounds.PositionLifetime.TotalMilliseconds;
        args[6] = (long)Math.Max(1, bounds.DedupeWindow.TotalMilliseconds);
        args[7] = bounds.OldestAllowedUnixMs(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        args[8] = pairs;
        args[9] = latest.Keeps ? "K" : latest.Clears ? string.Empty : Encode(messages[latest.Index]);
        for (var i = 0; i < pairs; i++)
        {
            args[10 + (2 * i)] = messages[i].Seq;
            args[11 + (2 * i)] = Encode(messages[i]);
        }

        for (var k = 0; k < storedKeys.Count; k++)
        {
            redisKeys[2 + k] = KeyOf(topic, storedKeys[k].Key);
            args[10 + (2 * pairs) + k] = storedKeys[k].Seq;
        }

        var result = (RedisResult[])(await redis.GetDatabase().ScriptEvaluateAsync(AppendScript, redisKeys, args))!;
        if ((long)result[0] != 1)
        {
            var storedEpoch = (string?)result[1];
            throw new HistoryConflictException(topic, epoch, messages[0].Seq - 1, string.IsNullOrEmpty(storedEpoch) ? null : storedEpoch, (long)result[2]);
        }
    }

    public async Task ClearLatestAsync(string topic, string epoch, long head, CancellationToken cancellationToken = default)
    {
        var result = (RedisResult[])(await redis.GetDatabase().ScriptEvaluateAsync(ClearLatestScript, [Keys(topic).Meta], [epoch, head]))!;
        if ((long)result[0] != 1)
        {
            throw new HistoryConflictException(topic, epoch, head, (string?)result[1], (long)result[2]);
        }
    }

    public async Task<TopicPosition?> FindKeyAsync(string topic, string key, CancellationToken cancellationToken = default)
    {
        var value = (string?)await redis.GetDatabase().StringGetAsync(KeyOf(topic, key));
        if (value is null)
        {
            return null;
        }

        var space = value.IndexOf(' ', StringComparison.Ordinal);
        return new TopicPosition(value[(space + 1)..], long.Parse(value.AsSpan(0, space), CultureInfo.InvariantCulture));
    }

    private (RedisKey Meta, RedisKey Messages) Keys(string topic) => ($"{prefix}:{{{topic}}}:meta", $"{prefix}:{{{topic}}}:msgs");

    private RedisKey KeyOf(string topic, string key) => $"{prefix}:{{{topic}}}:key:{key}";

    private static byte[] Encode(TopicMessage m)
    {
        var properties = m.Properties is { } p ? 4 + p.Length : 0;
        var bytes = new byte[HeaderBytes + properties + m.Data.Length];
        BinaryPrimitives.WriteInt64BigEndian(bytes, m.Seq);
        BinaryPrimitives.WriteInt64BigEndian(bytes.AsSpan(8), m.PublishedAtUnixMs);
        bytes[8] = (byte)((m.Format == PayloadFormat.Binary ? BinaryFlag : 0) | (m.Properties is null ? 0 : PropertiesFlag));
        if (m.Properties is { } props)
        {
            BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(HeaderBytes), props.Length);
            props.CopyTo(bytes.AsSpan(HeaderBytes + 4));
        }

        m.Data.CopyTo(bytes.AsSpan(HeaderBytes + properties));
        return bytes;
    }

    private static TopicMessage Decode(string topic, string epoch, byte[] bytes)
    {
        var format = (bytes[8] & BinaryFlag) != 0 ? PayloadFormat.Binary : PayloadFormat.Json;
        var publishedAt = BinaryPrimitives.ReadInt64BigEndian(bytes.AsSpan(8)) & 0x00FF_FFFF_FFFF_FFFF;
        byte[]? properties = null;
        var data = HeaderBytes;
        if ((bytes[8] & PropertiesFlag) != 0)
        {
            var length = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(HeaderBytes));
            properties = bytes[(HeaderBytes + 4)..(HeaderBytes + 4 + length)];
            data = HeaderBytes + 4 + length;
        }

        return new TopicMessage(topic, epoch, BinaryPrimitives.ReadInt64BigEndian(bytes), bytes[data..], publishedAt, format, properties);
    }
}

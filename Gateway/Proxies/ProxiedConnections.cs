using System.Collections.Concurrent;
using OrleansPush.Gateway.Security;

namespace OrleansPush.Gateway.Proxies;

/// <summary>
/// The connect proxy's answers for connections made of many HTTP requests (SignalR: negotiate, then its transport's
/// requests, each poll and each send of long polling), by the connection token each of those requests carries as
/// <c>id</c>: the backend is asked once per connection, not once per request. An answer is used for nothing longer than
/// it says: from its <c>expiresAt</c> on, the next request asks again. Bounded by count (past <see cref="MaxEntries"/>
/// a request simply asks) and by age (an entry no request used for <see cref="IdleLimit"/> is dropped; SignalR's long
/// polls come every 90 s at most).
/// </summary>
public sealed class ProxiedConnections(TimeProvider time)
{
    public const int MaxEntries = 100_000;
    public static readonly TimeSpan IdleLimit = TimeSpan.FromMinutes(5);
    private readonly ConcurrentDictionary<string, Entry> _byToken = new(StringComparer.Ordinal);
    private long _nextSweep;

    public int Count => _byToken.Count;

    /// <summary>The answer held for the connection token, or null (none, expired or idle too long).</summary>
    public ConnectionAccess? Find(string token)
    {
        if (!_byToken.TryGetValue(token, out var entry))
        {
            return null;
        }

        var now = time.GetUtcNow();
        if (Lapsed(entry, now))
        {
            _byToken.TryRemove(KeyValuePair.Create(token, entry));
            return null;
        }

        Volatile.Write(ref entry.LastUsed, now.UtcTicks);
        return entry.Access;
    }

    public void Remember(string token, ConnectionAccess access)
    {
        var now = time.GetUtcNow();
        SweepIfDue(now);
        if (_byToken.Count < MaxEntries || _byToken.ContainsKey(token))
        {
            _byToken[token] = new Entry(access, now.UtcTicks);
        }
    }

    private static bool Lapsed(Entry entry, DateTimeOffset now) =>
        entry.Access.ExpiresAt <= now || now.UtcTicks - Volatile.Read(ref entry.LastUsed) > IdleLimit.Ticks;

    /// <summary>At most once a minute, on the way of a <see cref="Remember"/>: drops what has lapsed.</summary>
    private void SweepIfDue(DateTimeOffset now)
    {
        var due = Interlocked.Read(ref _nextSweep);
        if (now.UtcTicks < due || Interlocked.CompareExchange(ref _nextSweep, now.UtcTicks + TimeSpan.TicksPerMinute, due) != due)
        {
            return;
        }

        foreach (var pair in _byToken)
        {
            if (Lapsed(pair.Value, now))
            {
                _byToken.TryRemove(pair);
            }
        }
    }

    private sealed class Entry(ConnectionAccess access, long lastUsed)
    {
        public readonly ConnectionAccess Access = access;
        public long LastUsed = lastUsed;
    }
}
